"""Mask NMS over one or more submissions, pooled per image and label, with optional mask voting.

Detections of the same image and label are suppressed greedily: the highest score first (ties keep the
pooled order), every remaining detection whose mask IoU with it is at least ``iou_thr`` is dropped. IoU
is computed on the compressed RLEs by pycocotools (one batched call per image and label; boxes that do not
overlap are skipped inside it), so no mask is decoded for suppression. Empty masks have IoU 0 with
everything and are never suppressed.

Mask voting (optional): an anchor that suppressed at least two masks whose scores sum to more than its
own takes the score-weighted mean of itself and those masks, thresholded at > 0.5. Suppression uses the
original masks; only voting anchors are decoded, cropped to their cluster's box.

Several submissions (e.g. expanded leaf detections and the parent model's) are read in lock-step, one
image at a time, so memory does not grow with the number of images. Survivors are written in pooled
order: the first input's detections, then the second's, ...

    nms_detections(dets, height, width, iou_thr, vote)   -> (survivors, number voted)
    mask_nms_submissions(inputs, out, iou_thr, vote)      -> NmsStats

    python -m util.post.mask_nms A.csv [B.csv ...] -o OUT.csv [--iou-thr 0.5] [--vote]
"""
from __future__ import annotations

import argparse
import binascii
import sys
import warnings
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from ..common.cli import run
from ..common.errors import DataError
from ..common.mask_codec import encoded_to_coco, encode_binary, rle_to_encoded
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


def vote_mask(rles: list[dict], weights: list[float]) -> dict:
    """Score-weighted mean of the masks > 0.5, computed inside the cluster's bounding box."""
    h, w = rles[0]['size']
    boxes = mask_utils.toBbox(rles)                             # x, y, w, h
    x0, y0 = int(boxes[:, 0].min()), int(boxes[:, 1].min())
    x1, y1 = int((boxes[:, 0] + boxes[:, 2]).max()), int((boxes[:, 1] + boxes[:, 3]).max())
    with warnings.catch_warnings():       # pycocotools' numpy-2 notice about __array__(copy=...)
        warnings.simplefilter('ignore', DeprecationWarning)
        masks = mask_utils.decode(rles)
    acc = np.zeros((y1 - y0, x1 - x0), np.float64)
    for k, wt in enumerate(weights):
        acc += wt * masks[y0:y1, x0:x1, k]
    full = np.zeros((h, w), np.uint8)
    full[y0:y1, x0:x1] = acc / sum(weights) > 0.5
    return encode_binary(full)


def nms_detections(dets, height: int, width: int, iou_thr: float = 0.5, vote: bool = False,
                   where: Callable[[int], str] = str) -> tuple[list[tuple[str, float, str]], int]:
    """Mask NMS per label over pooled (label, score, EncodedMask) triples; survivors in pooled order."""
    groups: dict[str, list[int]] = {}
    for i, det in enumerate(dets):
        groups.setdefault(det[0], []).append(i)
    keep = np.ones(len(dets), bool)
    replaced = {}
    for idx in groups.values():
        if len(idx) < 2:
            continue
        order = sorted(idx, key=lambda i: -dets[i][1])
        rles = []
        for i in order:
            try:
                rles.append(encoded_to_coco(dets[i][2], height, width))
            except (binascii.Error, zlib.error, ValueError):
                raise DataError(f'{where(i)}: mask is not base64 + zlib data') from None
        ious = np.asarray(mask_utils.iou(rles, rles, np.zeros(len(rles), np.uint8))).reshape(len(rles), -1)
        for a, hit in greedy_suppress(ious, iou_thr):
            keep[[order[j] for j in hit]] = False
            if vote and len(hit) >= 2:
                weights = [dets[order[a]][1]] + [dets[order[j]][1] for j in hit]
                if sum(weights[1:]) > weights[0]:
                    members = [rles[a]] + [rles[j] for j in hit]
                    replaced[order[a]] = rle_to_encoded(vote_mask(members, weights))
    out = [(d[0], d[1], replaced.get(i, d[2])) for i, d in enumerate(dets) if keep[i]]
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


def mask_nms_submissions(inputs: list[str], out: str, iou_thr: float = 0.5, vote: bool = False,
                         progress: bool = False) -> NmsStats:
    stats = NmsStats()
    with SubmissionWriter(out, SHORTEST) as writer:
        for rows in tqdm(iter_lockstep(inputs), desc='mask nms', unit='img',
                         disable=None if progress else True):
            pooled, origin = [], []
            for path, row in zip(inputs, rows):
                pooled.extend(row.detections)
                origin.extend((path, row.line, k) for k in range(len(row.detections)))

            def where(i):
                path, line, k = origin[i]
                return f'{path}:{line}: image {rows[0].image_id}: detection {k + 1}'

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
    args = parser.parse_args(argv)
    stats = mask_nms_submissions(args.inputs, args.out, args.iou_thr, args.vote, progress=True)
    print(f'{args.out}: {stats}', file=sys.stderr)


if __name__ == '__main__':
    sys.exit(run(main))
