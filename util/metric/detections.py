"""One image's predictions -> the metric's ``Detections``, checked strictly.

Predictions come as a submission row's triples (``LabelName Confidence EncodedMask``) or as RLEs (the
mmengine Metric). Each mask must cover exactly the image's H x W pixels; the check runs on the compressed
counts (``mask_codec.run_totals``), so nothing is decoded densely.

    class_indices(labels, classes, where, skip_unknown)   MIDs -> class indices (+ how many were skipped)
    check_scores(scores, where)                          confidences as float64, finite
    decode_encoded(encoded, height, width, where)        EncodedMask strings -> RLEs (bytes counts)
    check_rles(rles, height, width, where)               RLEs of the right size, counts as bytes
    expand_to_ancestors(dets, classes)                   a leaf model's detections copied to every ancestor
"""
from __future__ import annotations

import binascii
import zlib

import numpy as np

from ..common.errors import DataError
from ..common.mask_codec import encoded_to_coco, run_totals
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


def _check_totals(rles, height: int, width: int, where: str) -> None:
    totals = run_totals([r['counts'] for r in rles])
    bad = np.flatnonzero(totals != height * width)
    if bad.size:
        k = int(bad[0])
        what = 'malformed RLE counts' if totals[k] < 0 else f'runs cover {totals[k]} pixels'
        raise DataError(f'{where}: detection {k + 1}: mask is not {height}x{width} ({what}, '
                        f'expected {height * width})')


def decode_encoded(encoded, height: int, width: int, where: str) -> list:
    """EncodedMask strings (base64 of zlib of COCO RLE counts) -> RLEs with bytes counts, size-checked."""
    rles = []
    for k, s in enumerate(encoded):
        try:
            rles.append(encoded_to_coco(s, height, width))
        except (binascii.Error, zlib.error, ValueError):
            raise DataError(f'{where}: detection {k + 1}: EncodedMask is not base64 + zlib') from None
    _check_totals(rles, height, width, where)
    return rles


def check_rles(rles, height: int, width: int, where: str) -> list:
    """RLE dicts (str or bytes counts, e.g. mmdet's) -> bytes-counts RLEs of size height x width."""
    out = []
    for k, r in enumerate(rles):
        size = [int(v) for v in r['size']]
        if size != [height, width]:
            raise DataError(f'{where}: detection {k + 1}: mask is {size[0]}x{size[1]}, '
                            f'the image is {height}x{width}')
        counts = r['counts']
        if isinstance(counts, str):
            counts = counts.encode('ascii')
        elif not isinstance(counts, bytes):
            raise DataError(f'{where}: detection {k + 1}: RLE counts must be compressed (str or bytes)')
        out.append({'size': size, 'counts': counts})
    _check_totals(out, height, width, where)
    return out


def expand_to_ancestors(dets: Detections, classes: Classes) -> Detections:
    """Every detection followed by a copy (same score and mask) for each ancestor in the class list."""
    cls, scores, masks = [], [], []
    for c, s, m in zip(dets.classes.tolist(), dets.scores.tolist(), dets.masks):
        for e in classes.up(classes.mids[c]):
            cls.append(e)
            scores.append(s)
            masks.append(m)
    return Detections(np.asarray(cls, np.int64), np.asarray(scores, np.float64), masks)
