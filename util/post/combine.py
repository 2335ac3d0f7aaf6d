"""Combine submissions with disjoint classes into one, image by image, with an optional per-image cap.

The reference's last step puts the leaf detections (untouched) and the merged parent detections of each
image side by side; the 20th place did the same with its two "layer" models. The inputs are read in
lock-step (same images, same order) and each image's detections are concatenated in input order. A label
arriving from two inputs is an error unless allowed: it would mean the same class predicted twice without
NMS between them.

``max_dets`` keeps the best-scoring detections of an image (ties: the earlier one) and leaves their order
alone; large submissions time out on Kaggle, and the lowest scores matter least to AP.

Speed: an image whose detections need no change (no NMS, and no cap or fewer detections than the cap)
is written as the concatenation of its prediction strings: labels (for the disjointness check), the
field count and the confidences are checked, but the triples are copied as text and masks are never
decoded (``util.post.validate`` checks them; the pipeline validates every shard). Only images that are
capped or NMS-merged are parsed; their confidences are written back as read (shortest round-trip text).

    cap_detections(dets, max_dets)                                    -> dets
    combine_submissions(inputs, out, max_dets, allow_overlap)         -> CombineStats
    combine_leaf_and_parent(leaf, parents, out, iou_thr, vote, ...)   -> CombineStats

    python -m util.post.combine A.csv B.csv [...] -o OUT.csv [--max-dets N] [--allow-overlap] [--no-progress]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from ..common.cli import add_progress_flag, run
from ..common.cli import progress as progress_bar
from ..common.errors import DataError
from ..common.submission import (
    SHORTEST,
    SubmissionRow,
    SubmissionWriter,
    format_prediction_string,
    iter_lockstep,
    parse_prediction_string,
    split_prediction_string,
)
from .mask_nms import nms_detections, pool_rows


def cap_detections(dets: list, max_dets: int | None) -> list:
    """The ``max_dets`` highest-scoring detections, in their original order."""
    if max_dets is None or len(dets) <= max_dets:
        return dets
    best = sorted(range(len(dets)), key=lambda i: -dets[i][1])[:max_dets]
    return [dets[i] for i in sorted(best)]


@dataclass
class CombineStats:
    images: int = 0
    detections_in: int = 0
    detections_out: int = 0

    def __str__(self):
        return f'{self.images} images, {self.detections_out} of {self.detections_in} detections written'


def _where(path: str, row: SubmissionRow) -> str:
    return f'{path}:{row.line}: image {row.image_id}'


def _fields(path: str, row: SubmissionRow) -> list[str]:
    return split_prediction_string(row.text, _where(path, row))


def _parse(path: str, row: SubmissionRow) -> list[tuple[str, float, str]]:
    return parse_prediction_string(row.text, _where(path, row))


class _Owners:
    """Which input each label came from, to catch inputs whose classes overlap (at most 300 labels).
    ``groups`` maps an input to the group that owns its labels (inputs merged by NMS share one)."""

    def __init__(self, paths: list[str], groups: list[int] | None = None):
        self.paths, self.owner = paths, {}
        self.groups = groups or list(range(len(paths)))

    def check(self, rows, fields) -> None:
        for k, (row, parts) in enumerate(zip(rows, fields)):
            group = self.groups[k]
            for label in dict.fromkeys(parts[0::3]):
                first = self.owner.setdefault(label, (group, k))
                if first[0] != group:
                    raise DataError(
                        f'{_where(self.paths[k], row)}: label {label} also comes from '
                        f'{self.paths[first[1]]}; the inputs must have disjoint classes (merge them with '
                        'util.post.mask_nms first, or allow the overlap)')


def combine_submissions(inputs: list[str], out: str, max_dets: int | None = None, allow_overlap: bool = False,
                        progress: bool = False) -> CombineStats:
    """Concatenate the detections of submissions with disjoint classes, image by image."""
    return _combine(inputs, out, None, False, max_dets, None if allow_overlap else _Owners(inputs), progress)


def combine_leaf_and_parent(leaf: str, parents: list[str], out: str, iou_thr: float | None = None,
                            vote: bool = False, max_dets: int | None = None,
                            progress: bool = False) -> CombineStats:
    """Leaf detections, then the parent detections; with ``iou_thr`` the parent inputs are pooled and
    mask-NMS-merged in the same pass (no intermediate file), otherwise they are taken as merged."""
    paths = [leaf] + list(parents)
    groups = [0] + [1] * len(parents) if iou_thr is not None else None
    return _combine(paths, out, iou_thr, vote, max_dets, _Owners(paths, groups), progress)


def _merge_parents(paths, rows, iou_thr, vote) -> list[tuple[str, float, str]]:
    """The parent inputs' detections of one image, pooled and mask-NMS-merged; errors name file:line."""
    pooled, where = pool_rows(paths, rows, [_parse(p, r) for p, r in zip(paths, rows)])
    return nms_detections(pooled, rows[0].height, rows[0].width, iou_thr, vote, where)[0]


def _combine(paths, out, iou_thr, vote, max_dets, owners, progress) -> CombineStats:
    """With ``iou_thr`` the inputs after the first are NMS-merged; without, every input passes as is."""
    stats = CombineStats()
    with SubmissionWriter(out, SHORTEST) as writer:
        for rows in progress_bar(iter_lockstep(paths, parse=False), progress, desc='combine', unit='img'):
            fields = [_fields(p, r) for p, r in zip(paths, rows)]
            if owners is not None:
                owners.check(rows, fields)
            n_in = sum(len(f) for f in fields) // 3
            first = rows[0]
            if iou_thr is None and (max_dets is None or n_in <= max_dets):
                text, n_out = ' '.join([' '.join(f) for f in fields if f]), n_in    # unchanged: copied
            else:
                if iou_thr is None:
                    dets = [d for p, r in zip(paths, rows) for d in _parse(p, r)]
                else:
                    dets = _parse(paths[0], first) + _merge_parents(paths[1:], rows[1:], iou_thr, vote)
                dets = cap_detections(dets, max_dets)
                text, n_out = format_prediction_string(dets, SHORTEST), len(dets)
            writer.write_raw(first.image_id, first.width, first.height, text)
            stats.images += 1
            stats.detections_in += n_in
            stats.detections_out += n_out
    return stats


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog='python -m util.post.combine',
                                     description='Concatenate submissions with disjoint classes per image.')
    parser.add_argument('inputs', nargs='+', help='submission CSVs listing the same images in the same order')
    parser.add_argument('-o', '--out', required=True)
    parser.add_argument('--max-dets', type=int, default=None, help='keep the N best detections per image')
    parser.add_argument('--allow-overlap', action='store_true', help='do not insist on disjoint classes')
    add_progress_flag(parser)
    args = parser.parse_args(argv)
    stats = combine_submissions(args.inputs, args.out, args.max_dets, args.allow_overlap, args.progress)
    print(f'{args.out}: {stats}', file=sys.stderr)


if __name__ == '__main__':
    sys.exit(run(main))
