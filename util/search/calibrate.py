"""Score calibration: per member, an isotonic map from raw score to the chance of a true positive.

Members score on different scales (a Mask R-CNN's 0.6 is not a cascade's 0.6), and fusion averages the
scores; mapping each member's scores to the probability that the challenge's matching rules call the
detection a true positive puts them on one scale. The map is fitted (scikit-learn's
``IsotonicRegression``, monotone by construction) on one fold's scored detections only: the metric's
per-detection outcomes (``util.metric.rules``), ignored and unscored detections left out.

    fit_calibrators(members, session, fold)   -> {member: Calibrator}
    Calibrator.apply(scores)                  -> calibrated scores in [0, 1], same order
    save_calibrators(path, fitted) / load_calibrators(path)   JSON: the fitted step functions

A fitted map is kept as its breakpoints and applied by linear interpolation between them (what the
isotonic model's ``predict`` computes), so a map read back from its file gives the same scores.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.isotonic import IsotonicRegression

from ..metric.rules import FALSE_POSITIVE, TRUE_POSITIVE


@dataclass
class Calibrator:
    x: list | None          # breakpoints (raw scores, increasing); None: too few outcomes, scores kept
    y: list | None          # calibrated score at each breakpoint (non-decreasing, in [0, 1])
    samples: int

    @property
    def model(self):
        return None if self.x is None else (self.x, self.y)

    def apply(self, scores) -> np.ndarray:
        s = np.asarray(scores, np.float64)
        if self.x is None or not s.size:
            return s
        return np.clip(np.interp(s, self.x, self.y), 0.0, 1.0)


def save_calibrators(path: str, fitted: dict) -> None:
    import json

    from ..common.atomic import AtomicWriter
    with AtomicWriter(path) as f:
        json.dump({m: dict(x=c.x, y=c.y, samples=c.samples) for m, c in fitted.items()}, f)


def load_calibrators(path: str) -> dict:
    import json

    from ..common.errors import DataError
    try:
        with open(path) as f:
            doc = json.load(f)
        return {m: Calibrator(v['x'], v['y'], int(v['samples'])) for m, v in doc.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f'{path}: not a calibration file ({type(e).__name__}: {e})') from None


def fit_calibrator(scores, outcomes, min_samples: int = 20) -> Calibrator:
    """Isotonic fit of TP (1) / FP (0) against score; other outcome codes are left out."""
    scores, outcomes = np.asarray(scores, np.float64), np.asarray(outcomes)
    scored = (outcomes == TRUE_POSITIVE) | (outcomes == FALSE_POSITIVE)
    x, y = scores[scored], (outcomes[scored] == TRUE_POSITIVE).astype(np.float64)
    if len(x) < min_samples or y.min() == y.max():
        return Calibrator(None, None, int(len(x)))
    model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds='clip')
    model.fit(x, y)
    return Calibrator(model.X_thresholds_.tolist(), model.y_thresholds_.tolist(), int(len(x)))


def fit_calibrators(members, session, fold, expand: bool = True) -> dict:
    """One calibrator per member, from the outcomes of all its views' detections on ``fold`` (each view
    evaluated alone: the outcome of a detection depends on the others of its own prediction)."""
    fitted = {}
    for member in members.members:
        xs, ys = [], []
        for k, name in enumerate(members.names):
            if members.member_of[k] != member:
                continue
            preds = {i: _columns(members.dets[i][k]) for i in fold}
            told = session.evaluate(preds, image_ids=fold, outcomes=True, expand=False)
            for _, scores, codes in told.outcomes.values():
                xs.append(scores)
                ys.append(codes)
        fitted[member] = fit_calibrator(np.concatenate(xs) if xs else [], np.concatenate(ys) if ys else [])
    return fitted


def _columns(triples):
    if not triples:
        return (), (), ()
    return tuple(zip(*triples))
