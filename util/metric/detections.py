"""One image's predictions -> the metric's ``Detections``, checked strictly.

Predictions come as a submission row's triples (``LabelName Confidence EncodedMask``) or as RLEs (the
mmengine Metric). Masks are decoded and checked by the mask codec, the one owner of the format (strict
base64 and zlib, runs covering exactly the image's H x W, on the compressed counts): the metric scores
exactly what ``util.post.validate`` accepts.

    class_indices(labels, classes, where, skip_unknown)   MIDs -> class indices (+ how many were skipped)
    check_scores(scores, where)                          confidences as float64, finite
    expand_to_ancestors(dets, classes)                   a leaf model's detections copied to every ancestor
"""
from __future__ import annotations

import numpy as np

from ..common.errors import DataError
from .rules import Classes, Detections


def class_indices(labels, classes: Classes, where: str, skip_unknown: bool = False):
    """(indices, keep positions, skipped count). An unknown label is an error unless ``skip_unknown``."""
    idx, keep, skipped = [], [], 0
    for k, mid in enumerate(labels):
        c = classes.index.get(mid)
        if c is None:
            if not skip_unknown:
                raise DataError(f'{where}: detection {k + 1}: label {mid} is not in the class list')
            skipped += 1
            continue
        idx.append(c)
        keep.append(k)
    return idx, keep, skipped


def check_scores(scores, where: str) -> np.ndarray:
    s = np.asarray(scores, np.float64)
    bad = np.flatnonzero(~np.isfinite(s))
    if bad.size:
        raise DataError(f'{where}: detection {bad[0] + 1}: confidence {s[bad[0]]} is not finite')
    return s


def expand_to_ancestors(dets: Detections, classes: Classes) -> Detections:
    """Every detection followed by a copy (same score and mask) for each ancestor in the class list."""
    rows, cls = [], []
    for k, c in enumerate(dets.classes.tolist()):
        for e in classes.up(classes.mids[c]):
            rows.append(k)
            cls.append(e)
    out = dets.take(rows)
    out.classes = np.asarray(cls, np.int64)
    return out
