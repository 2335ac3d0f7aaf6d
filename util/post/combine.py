"""Combine submissions with disjoint classes into one, image by image, with an optional per-image cap.

The reference's last step puts the leaf detections (untouched) and the merged parent detections of each
image side by side; the 20th place did the same with its two "layer" models. The inputs are read in
lock-step (same images, same order) and each image's detections are concatenated in input order. A label
arriving from two inputs is an error unless allowed: it would mean the same class predicted twice without
NMS between them.

``max_dets`` keeps the best-scoring detections of an image (ties: the earlier one) and leaves their order
alone; large submissions time out on Kaggle, and the lowest scores matter least to AP.

    cap_detections(dets, max_dets)                                  -> dets
    combine_submissions(inputs, out, max_dets, allow_overlap)                 -> CombineStats
    combine_leaf_and_parent(leaf, parents, out, nms_iou, vote, ...) -> CombineStats

    python -m util.post.combine A.csv B.csv [...] -o OUT.csv [--max-dets N] [--allow-overlap]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from tqdm import tqdm

from ..common.cli import run
from ..common.errors import DataError
from .mask_nms import nms_detections
from ..common.submission import SHORTEST, SubmissionWriter, iter_lockstep


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


class _Owners:
    """Which input each label came from, to catch inputs whose classes overlap (at most 300 labels).
    ``groups`` maps an input to the group that owns its labels (inputs merged by NMS share one)."""

    def __init__(self, paths: list[str], groups: list[int] | None = None):
        self.paths, self.owner = paths, {}
        self.groups = groups or list(range(len(paths)))

    def check(self, rows) -> None:
        for k, row in enumerate(rows):
            group = self.groups[k]
            for label, _, _ in row.detections:
                first = self.owner.setdefault(label, (group, k))
                if first[0] != group:
                    raise DataError(
                        f'{self.paths[k]}:{row.line}: image {row.image_id}: label {label} also comes from '
                        f'{self.paths[first[1]]}; the inputs must have disjoint classes (merge them with '
                        'util.post.mask_nms first, or allow the overlap)')


def combine_submissions(inputs: list[str], out: str, max_dets: int | None = None, allow_overlap: bool = False,
              progress: bool = False) -> CombineStats:
    """Concatenate the detections of submissions with disjoint classes, image by image."""
    return _combine(inputs, out, lambda rows: [d for r in rows for d in r.detections], max_dets,
                    None if allow_overlap else _Owners(inputs), progress)


def combine_leaf_and_parent(leaf: str, parents: list[str], out: str, nms_iou: float | None = None,
                            vote: bool = False, max_dets: int | None = None,
                            progress: bool = False) -> CombineStats:
    """Leaf detections, then the parent detections; with ``nms_iou`` the parent inputs are pooled and
    mask-NMS-merged in the same pass (no intermediate file), otherwise they are taken as merged."""
    paths = [leaf] + list(parents)

    def merge(rows):
        parent_dets = [d for r in rows[1:] for d in r.detections]
        if nms_iou is not None:
            first = rows[0]
            parent_dets, _ = nms_detections(parent_dets, first.height, first.width, nms_iou, vote,
                                            lambda i: f'image {first.image_id}: parent detection {i + 1}')
        return rows[0].detections + parent_dets

    groups = [0] + [1] * len(parents) if nms_iou is not None else None
    return _combine(paths, out, merge, max_dets, _Owners(paths, groups), progress)


def _combine(paths, out, merge, max_dets, owners, progress) -> CombineStats:
    stats = CombineStats()
    with SubmissionWriter(out, SHORTEST) as writer:
        for rows in tqdm(iter_lockstep(paths), desc='combine', unit='img',
                         disable=None if progress else True):
            if owners is not None:
                owners.check(rows)
            dets = merge(rows)
            stats.detections_in += len(dets)
            dets = cap_detections(dets, max_dets)
            first = rows[0]
            writer.write(first.image_id, first.width, first.height, dets)
            stats.images += 1
            stats.detections_out += len(dets)
    return stats


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog='python -m util.post.combine',
                                     description='Concatenate submissions with disjoint classes per image.')
    parser.add_argument('inputs', nargs='+', help='submission CSVs listing the same images in the same order')
    parser.add_argument('-o', '--out', required=True)
    parser.add_argument('--max-dets', type=int, default=None, help='keep the N best detections per image')
    parser.add_argument('--allow-overlap', action='store_true', help='do not insist on disjoint classes')
    args = parser.parse_args(argv)
    stats = combine_submissions(args.inputs, args.out, args.max_dets, args.allow_overlap, progress=True)
    print(f'{args.out}: {stats}', file=sys.stderr)


if __name__ == '__main__':
    sys.exit(run(main))
