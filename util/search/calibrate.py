"""Score calibration: per member, an isotonic map from raw score to the chance of a true positive.

Members score on different scales (a Mask R-CNN's 0.6 is not a cascade's 0.6), and fusion averages the
scores; mapping each member's scores to the probability that the challenge's matching rules call the
detection a true positive puts them on one scale. The map is fitted (scikit-learn's
``IsotonicRegression``, monotone by construction) on one fold's scored detections only: the metric's
per-detection outcomes (``util.metric.rules``), ignored and unscored detections left out.

    fit_calibrators(members, session, fold)   -> {member: Calibrator}
    Calibrator.apply(scores)                  -> calibrated scores in [0, 1], same order
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.isotonic import IsotonicRegression

from ..metric.rules import FALSE_POSITIVE, TRUE_POSITIVE


@dataclass
class Calibrator:
    model: IsotonicRegression | None      # None: too few outcomes, scores left as they are
    samples: int

    def apply(self, scores) -> np.ndarray:
        s = np.asarray(scores, np.float64)
        if self.model is None or not s.size:
            return s
        return np.clip(self.model.predict(s), 0.0, 1.0)


def fit_calibrator(scores, outcomes, min_samples: int = 20) -> Calibrator:
    """Isotonic fit of TP (1) / FP (0) against score; other outcome codes are left out."""
    scores, outcomes = np.asarray(scores, np.float64), np.asarray(outcomes)
    scored = (outcomes == TRUE_POSITIVE) | (outcomes == FALSE_POSITIVE)
    x, y = scores[scored], (outcomes[scored] == TRUE_POSITIVE).astype(np.float64)
    if len(x) < min_samples or y.min() == y.max():
        return Calibrator(None, int(len(x)))
    model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds='clip')
    model.fit(x, y)
    return Calibrator(model, int(len(x)))


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
