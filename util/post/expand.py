"""Expansion up the class hierarchy: a detection of a class also counts for every ancestor.

The scorer does not expand predictions, so a submission scores on a parent class only with detections of
that class. Every detection is copied to each ancestor (every parent path: Teddy bear -> Toy, Bear,
Carnivore) with the same score and the same encoded mask. The file step works on the prediction
string's fields: the confidence and mask texts are copied as read, never parsed into floats or decoded
(``score_thr`` alone parses confidences), so expansion costs little more than reading and writing.

    Expander(hierarchy, parents_only, score_thr, only)   .labels_for(mid), .expand(dets), .expand_fields(parts)
    expand_submission(inp, out, expander)                 -> ExpandStats

Output per detection, in input order: the detection itself (unless ``parents_only``), then its copies in
hierarchy order. ``score_thr`` drops detections scoring below it first; ``only`` keeps just the output
labels in a class list (e.g. ``parent25``).

    python -m util.post.expand IN.csv -o OUT.csv [--parents-only] [--score-thr T] [--only SUBSET|FILE]
                                [--hierarchy JSON] [--no-progress]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from ..common.cli import add_progress_flag, run
from ..common.cli import progress as progress_bar
from ..common.errors import DataError
from ..common.hierarchy import DEFAULT_CLASSES, DEFAULT_HIERARCHY, Hierarchy, class_list
from ..common.submission import (
    SubmissionWriter,
    iter_submission,
    split_prediction_string,
)


class Expander:
    """Maps each label to the labels its detections are written under (cached per label)."""

    def __init__(self, hierarchy: Hierarchy, parents_only: bool = False, score_thr: float | None = None,
                 only: list[str] | None = None):
        self.hierarchy = hierarchy
        self.parents_only = parents_only
        self.score_thr = score_thr
        self.only = None if only is None else set(only)
        self._table: dict[str, list[str]] = {}

    def labels_for(self, label: str) -> list[str]:
        out = self._table.get(label)
        if out is None:
            if label not in self.hierarchy.rank:
                raise KeyError(label)
            out = self.hierarchy.ancestors_in_order(label)
            if not self.parents_only:
                out = [label] + out
            if self.only is not None:
                out = [m for m in out if m in self.only]
            self._table[label] = out
        return out

    def _targets(self, label: str, where: str) -> list[str]:
        try:
            return self.labels_for(label)
        except KeyError:
            raise DataError(f'{where}: label {label} is not in the class hierarchy') from None

    def expand(self, dets, where: str = '') -> list[tuple[str, float, str]]:
        """Parsed (label, score, mask) triples -> their expansion."""
        thr = self.score_thr
        return [(m, score, enc) for label, score, enc in dets if thr is None or score >= thr
                for m in self._targets(label, where)]

    def expand_fields(self, parts: list[str], where: str = '') -> list[str]:
        """Checked PredictionString fields -> the expansion's triples as text, confidences and masks as
        they were read."""
        keep = range(0, len(parts), 3)
        if self.score_thr is not None:
            keep = [i for i in keep if float(parts[i + 1]) >= self.score_thr]
        out, table = [], self._table
        for i in keep:
            targets = table.get(parts[i])
            if targets is None:
                targets = self._targets(parts[i], where)
            if targets:
                tail = f' {parts[i + 1]} {parts[i + 2]}'
                out.extend([m + tail for m in targets])
        return out


@dataclass
class ExpandStats:
    images: int = 0
    detections_in: int = 0
    detections_out: int = 0

    def __str__(self):
        return f'{self.images} images, {self.detections_in} detections in, {self.detections_out} out'


def expand_submission(inp: str, out: str, expander: Expander, progress: bool = False) -> ExpandStats:
    stats = ExpandStats()
    with SubmissionWriter(out) as writer:
        for row in progress_bar(iter_submission(inp, parse=False), progress, desc='expand', unit='img'):
            where = f'{inp}:{row.line}: image {row.image_id}'
            parts = split_prediction_string(row.text, where)
            dets = expander.expand_fields(parts, where)
            writer.write_raw(row.image_id, row.width, row.height, ' '.join(dets))
            stats.images += 1
            stats.detections_in += len(parts) // 3
            stats.detections_out += len(dets)
    return stats


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog='python -m util.post.expand',
                                     description='Copy every detection to each ancestor class.')
    parser.add_argument('inp', help='submission CSV')
    parser.add_argument('-o', '--out', required=True)
    parser.add_argument('--parents-only', action='store_true', help='write only the ancestor copies')
    parser.add_argument('--score-thr', type=float, default=None, help='drop detections scoring below this')
    parser.add_argument('--only', help='keep only output labels in this class subset name or MID file')
    parser.add_argument('--hierarchy', default=DEFAULT_HIERARCHY, help='hierarchy JSON')
    add_progress_flag(parser)
    args = parser.parse_args(argv)
    hierarchy = Hierarchy.from_json(args.hierarchy, DEFAULT_CLASSES)
    only = class_list(args.only, hierarchy) if args.only else None
    expander = Expander(hierarchy, args.parents_only, args.score_thr, only)
    stats = expand_submission(args.inp, args.out, expander, args.progress)
    print(f'{args.out}: {stats}', file=sys.stderr)


if __name__ == '__main__':
    sys.exit(run(main))
