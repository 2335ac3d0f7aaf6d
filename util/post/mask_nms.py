"""Mask NMS over one or more submissions, pooled per image and label, with optional mask voting.

Detections of the same image and label are suppressed greedily: the highest score first (ties keep the
pooled order), every remaining detection whose mask IoU with it is at least ``iou_thr`` is dropped. IoU
is read off the compressed RLEs' runs (``rle_runs.pairwise_iou``: pycocotools' ``iou`` to the bit, each
pair merged once, pairs whose boxes are apart skipped), so no mask is decoded for suppression. Empty masks
have IoU 0 with everything and are never suppressed.

Every mask an image brings is decoded strictly first (``mask_codec.decode_encoded_batch``: base64, zlib,
runs adding up to H x W), also those of labels with one detection: a corrupt mask passed through would
reach the submission (and pycocotools, which the voting uses, never returns on runs that do not add up).

Mask voting (optional): an anchor that suppressed at least two masks whose scores sum to more than its
own takes the score-weighted mean of itself and those masks, thresholded at > 0.5. Suppression uses the
original masks; only voting anchors are decoded, cropped to their cluster's box.

Several submissions (e.g. expanded leaf detections and the parent model's) are read in lock-step, one
image at a time, so memory does not grow with the number of images. Survivors are written in pooled
order: the first input's detections, then the second's, ...

    nms_detections(dets, height, width, iou_thr, vote)   -> (survivors, number voted)
    mask_ious(rles, encoded, memo)                        -> one label group's IoUs (MaskIoUs: remembered)
    pool_rows(paths, rows[, detections])                  -> pooled detections, where(i) naming file:line
    mask_nms_submissions(inputs, out, iou_thr, vote)      -> NmsStats

    python -m util.post.mask_nms A.csv [B.csv ...] -o OUT.csv [--iou-thr 0.5] [--vote]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np
from pycocotools import mask as mask_utils

from ..common.cli import add_progress_flag, run
from ..common.cli import progress as progress_bar
from ..common.mask_codec import decode_encoded_batch, encode_region, rle_to_encoded, to_coco, with_counts
from ..common.rle_runs import add_window, pairwise_iou
from ..common.submission import SHORTEST, SubmissionWriter, iter_lockstep


def greedy_suppress(ious: np.ndarray, thr: float) -> list[tuple[int, np.ndarray]]:
    """Greedy NMS on an IoU matrix of detections already sorted best first.
    Returns (anchor, the indices it suppressed) for every survivor."""
    n = len(ious)
    over = ious >= thr
    alive = np.ones(n, bool)
    kept = []
    for a in range(n):
        if not alive[a]:
            continue
        hit = np.flatnonzero(over[a, a + 1:] & alive[a + 1:]) + (a + 1)
        alive[hit] = False
        kept.append((a, hit))
    return kept


class MaskIoUs:
    """Pairwise mask IoUs remembered by the masks' strings, for one image: a search fuses the same
    member masks (the same label groups) in every trial, and their IoUs do not depend on the setting.
    Keeps the ``capacity`` groups used last."""

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self._known: dict[tuple, np.ndarray] = {}

    def __call__(self, encoded: list[str], rles: list[dict]) -> np.ndarray:
        unique = sorted(set(encoded))
        key = tuple(unique)
        table = self._known.pop(key, None)
        if table is None:
            first = {s: k for k, s in reversed(list(enumerate(encoded)))}
            ordered = [rles[first[s]] for s in unique]
            table = _ious(ordered)
        self._known[key] = table
        if len(self._known) > self.capacity:
            del self._known[next(iter(self._known))]
        at = {s: k for k, s in enumerate(unique)}
        idx = np.fromiter((at[s] for s in encoded), np.int64, len(encoded))
        return table[np.ix_(idx, idx)]


def mask_ious(rles: list[dict], encoded: list[str] | None = None, memo: MaskIoUs | None = None) -> np.ndarray:
    """(N, N) IoUs of one label group's checked masks; through ``memo`` when given."""
    if memo is not None and encoded is not None:
        return memo(encoded, rles)
    return _ious(rles)


def _ious(rles: list[dict]) -> np.ndarray:
    """pycocotools' ``iou`` of the masks with themselves, to the bit, read off their runs
    (``rle_runs.pairwise_iou``: about 3.4x faster on a search's label groups, each pair merged once)."""
    if not rles:
        return np.zeros((0, 0))
    return pairwise_iou([r['counts'] for r in to_coco(rles)], int(rles[0]['size'][0]))


def vote_mask(rles: list[dict], weights: list[float], thr: float = 0.5) -> dict:
    """Weighted mean of the masks > ``thr``, computed inside the cluster's bounding box only (the runs
    are painted there; no mask is decoded at the image's size)."""
    h, w = rles[0]['size']
    boxes = mask_utils.toBbox(rles)                             # x, y, w, h
    x0, y0 = int(boxes[:, 0].min()), int(boxes[:, 1].min())
    x1, y1 = int((boxes[:, 0] + boxes[:, 2]).max()), int((boxes[:, 1] + boxes[:, 3]).max())
    acc = np.zeros((y1 - y0, x1 - x0), np.float64)
    for rle, wt in zip(rles, weights):                          # in order: the same sums as dense masks
        add_window(rle['counts'], h, y0, y1, x0, x1, wt, acc)
    return encode_region(acc / sum(weights) > thr, y0, x0, h, w)


def nms_detections(dets, height: int, width: int, iou_thr: float = 0.5, vote: bool = False,
                   where: Callable[[int], str] | str = '', memo: MaskIoUs | None = None
                   ) -> tuple[list[tuple[str, float, str]], int]:
    """Mask NMS per label over pooled (label, score, EncodedMask) triples; survivors in pooled order.
    Every mask is checked first; a broken one raises DataError naming ``where`` (``where(i)`` for a
    callable, else ``where: detection i+1``). ``memo``: the image's remembered IoUs (a search's)."""
    coco = decode_encoded_batch([d[2] for d in dets], height, width, where)
    groups: dict[str, list[int]] = {}
    for i, det in enumerate(dets):
        groups.setdefault(det[0], []).append(i)
    keep = np.ones(len(dets), bool)
    replaced = {}
    for idx in groups.values():
        if len(idx) < 2:
            continue
        order = sorted(idx, key=lambda i: -dets[i][1])
        rles = [coco[i] for i in order]
        ious = mask_ious(rles, [dets[i][2] for i in order], memo)
        for a, hit in greedy_suppress(ious, iou_thr):
            keep[[order[j] for j in hit]] = False
            if vote and len(hit) >= 2:
                weights = [dets[order[a]][1]] + [dets[order[j]][1] for j in hit]
                if sum(weights[1:]) > weights[0]:
                    members = [rles[a]] + [rles[j] for j in hit]
                    replaced[order[a]] = rle_to_encoded(vote_mask(members, weights))
    out = [(d[0], d[1], replaced[i] if i in replaced else with_counts(d[2], coco[i]))
           for i, d in enumerate(dets) if keep[i]]
    return out, len(replaced)


@dataclass
class NmsStats:
    images: int = 0
    detections_in: int = 0
    detections_out: int = 0
    voted: int = 0

    def __str__(self):
        return (f'{self.images} images, {self.detections_out} of {self.detections_in} detections kept, '
                f'{self.voted} masks voted')


def pool_rows(paths: list[str], rows, detections=None
              ) -> tuple[list[tuple[str, float, str]], Callable[[int], str]]:
    """One image's rows of several inputs -> their pooled detections and ``where(i)``, which names the
    file, line, image and detection (within its row) of pooled detection i, for error messages.
    ``detections`` (one list per row) stands in for ``row.detections`` of rows read with parse=False."""
    pooled, origin = [], []
    for path, row, dets in zip(paths, rows, detections or [r.detections for r in rows]):
        pooled.extend(dets)
        origin.extend((path, row.line, k) for k in range(len(dets)))

    def where(i: int) -> str:
        path, line, k = origin[i]
        return f'{path}:{line}: image {rows[0].image_id}: detection {k + 1}'
    return pooled, where


def mask_nms_submissions(inputs: list[str], out: str, iou_thr: float = 0.5, vote: bool = False,
                         progress: bool = False) -> NmsStats:
    stats = NmsStats()
    with SubmissionWriter(out, SHORTEST) as writer:
        for rows in progress_bar(iter_lockstep(inputs), progress, desc='mask nms', unit='img'):
            pooled, where = pool_rows(inputs, rows)
            first = rows[0]
            kept, voted = nms_detections(pooled, first.height, first.width, iou_thr, vote, where)
            writer.write(first.image_id, first.width, first.height, kept)
            stats.images += 1
            stats.detections_in += len(pooled)
            stats.detections_out += len(kept)
            stats.voted += voted
    return stats


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog='python -m util.post.mask_nms',
                                     description='Mask NMS per image and label over pooled submissions.')
    parser.add_argument('inputs', nargs='+', help='submission CSVs listing the same images in the same order')
    parser.add_argument('-o', '--out', required=True)
    parser.add_argument('--iou-thr', type=float, default=0.5, help='suppress at mask IoU >= this (0.5)')
    parser.add_argument('--vote', action='store_true', help='mask voting for anchors of big clusters')
    add_progress_flag(parser)
    args = parser.parse_args(argv)
    stats = mask_nms_submissions(args.inputs, args.out, args.iou_thr, args.vote, progress=args.progress)
    print(f'{args.out}: {stats}', file=sys.stderr)


if __name__ == '__main__':
    sys.exit(run(main))
