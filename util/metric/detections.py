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
    found = list(map(classes.index.get, labels))
    if None not in found:
        return found, list(range(len(found))), 0
    if not skip_unknown:
        k = found.index(None)
        raise DataError(f'{where}: detection {k + 1}: label {labels[k]} is not in the class list')
    keep = [k for k, c in enumerate(found) if c is not None]
    return [found[k] for k in keep], keep, len(found) - len(keep)


def check_scores(scores, where: str) -> np.ndarray:
    s = np.asarray(scores, np.float64)
    bad = np.flatnonzero(~np.isfinite(s))
    if bad.size:
        raise DataError(f'{where}: detection {bad[0] + 1}: confidence {s[bad[0]]} is not finite')
    return s


def expand_to_ancestors(dets: Detections, classes: Classes) -> Detections:
    """Every detection followed by a copy (same score and mask) for each ancestor in the class list."""
    offsets, expanded = classes.up_table()
    own = np.asarray(dets.classes, np.int64)
    counts = offsets[own + 1] - offsets[own]
    rows = np.repeat(np.arange(len(own)), counts)
    # position of each copy in its detection's run of the table: offsets[class] + 0, 1, ...
    first = np.cumsum(counts) - counts
    out = dets.take(rows)
    out.classes = expanded[np.repeat(offsets[own], counts) + np.arange(len(rows)) - np.repeat(first, counts)]
    return out
