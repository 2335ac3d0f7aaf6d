"""Class-list files for class-subset experts: the rarest / most frequent classes, or a band of ranks.

The 2019 teams fine-tuned expert models on frequency-split class subsets. This picks such a subset from a
pool of classes (a preset or a class-list file) ranked by training masks, most first (ties in hierarchy
order): Google's counts in ``data/challenge-2019-train-mask-counts.csv`` by default, or the instances of
an annotation file (``--annotations``, e.g. a synthetic dataset's). Classes with fewer than ``--min-count``
masks (default 1) are left out of the pool. The file written is a class list that
``--subset`` of ``util.data.build`` and ``util.data.shards``, ``tools/convert_pretrained.py`` and the
ensemble configs read (``util.common.hierarchy.read_class_file``): ``MID,Name`` rows in hierarchy order
after ``#`` comment lines saying how it was made.

    python -m util.data.subsets --rarest 100 --of leaf --out data/subsets/leaf-rare-100.txt
    python -m util.data.subsets --frequency-band 64-174 --out data/subsets/leaf-mid.txt
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import sys
from collections import Counter

from ..common.atomic import AtomicWriter
from ..common.cli import run
from ..common.errors import DataError
from ..common.hierarchy import (
    DEFAULT_MASK_COUNTS,
    SUBSET_HELP,
    Hierarchy,
    load_default,
    read_mask_counts,
    subset_arg,
    subset_classes,
)
from .annotations import load_annotations

_BAND_RE = re.compile(r'^(\d+)-(\d*)$')


def annotation_counts(path: str) -> dict[str, int]:
    """Non-ignored instances per MID of an annotation file."""
    ann = load_annotations(path)
    mids = ann['metainfo']['mids']
    counts = Counter(inst['bbox_label'] for item in ann['data_list'] for inst in item['instances']
                     if not inst.get('ignore_flag', 0))
    return {mids[k]: n for k, n in counts.items()}


def rank_by_count(hierarchy: Hierarchy, pool: list[str], counts: dict[str, int]) -> list[str]:
    """``pool`` by count, most first; classes without a count have 0; ties in hierarchy order."""
    return sorted(pool, key=lambda m: (-counts.get(m, 0), hierarchy.rank[m]))


def parse_band(spec: str, n: int) -> tuple[int, int]:
    """``'A-B'`` / ``'A-'`` (ranks, 0 = most frequent, inclusive) -> (first, last) clipped to ``n`` classes."""
    m = _BAND_RE.match(spec.strip())
    if not m:
        raise DataError(f'--frequency-band: cannot read {spec!r} (expected FIRST-[LAST], ranks from 0)')
    first, last = int(m.group(1)), int(m.group(2)) if m.group(2) else None
    if first >= n:
        raise DataError(f'--frequency-band {spec}: the pool has only {n} classes (ranks 0-{n - 1})')
    if last is None:
        last = n - 1
    if last < first:
        raise DataError(f'--frequency-band {spec}: last rank before first')
    return first, min(last, n - 1)


def pick(ranked: list[str], rarest: int | None = None, most_frequent: int | None = None,
         band: tuple[int, int] | None = None) -> list[str]:
    """The chosen slice of the ranking (most frequent first)."""
    n = len(ranked)
    if rarest is not None or most_frequent is not None:
        k = rarest if rarest is not None else most_frequent
        if not 0 < k <= n:
            raise DataError(f'asked for {k} classes of a pool of {n}')
        return ranked[n - k:] if rarest is not None else ranked[:k]
    first, last = band
    return ranked[first:last + 1]


def write_class_list(path: str, hierarchy: Hierarchy, mids: list[str], comments: list[str]) -> None:
    """``# comments`` then ``MID,Name`` rows in hierarchy order (atomic)."""
    with AtomicWriter(path) as f:
        for line in comments:
            f.write(f'# {line}\n')
        w = csv.writer(f, lineterminator='\n')
        for mid in sorted(mids, key=hierarchy.rank.__getitem__):
            w.writerow([mid, hierarchy.name(mid)])


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='python -m util.data.subsets', description=__doc__.split('\n\n')[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument('--rarest', type=int, metavar='N', help='the N classes with the fewest training masks')
    g.add_argument('--most-frequent', type=int, metavar='N', help='the N classes with the most training masks')
    g.add_argument('--frequency-band', metavar='A-B', help='ranks A..B by training masks (0 = most), inclusive')
    p.add_argument('--of', default='leaf', type=subset_arg, help='the pool of classes ranked; ' + SUBSET_HELP)
    c = p.add_mutually_exclusive_group()
    c.add_argument('--counts', default=DEFAULT_MASK_COUNTS, help='class,count CSV (default: Google\'s train masks)')
    c.add_argument('--annotations', default=None, help='count the instances of this annotation file instead')
    p.add_argument('--min-count', type=int, default=1,
                   help='leave out classes with fewer training masks (default 1: no expert for an unseen class)')
    p.add_argument('--out', required=True, help='class-list file to write')
    return p.parse_args(argv)


def main(argv=None) -> None:
    a = parse_args(argv)
    hierarchy = load_default()
    pool = subset_classes(hierarchy, a.of)
    source = a.annotations or a.counts
    counts = annotation_counts(a.annotations) if a.annotations else read_mask_counts(a.counts)
    ranked = rank_by_count(hierarchy, [m for m in pool if counts.get(m, 0) >= a.min_count], counts)
    if not ranked:
        raise DataError(f'{source}: no class of {a.of} has {a.min_count} or more training masks')
    band = parse_band(a.frequency_band, len(ranked)) if a.frequency_band else None
    chosen = pick(ranked, a.rarest, a.most_frequent, band)
    what = (f'the {a.rarest} rarest of' if a.rarest is not None else
            f'the {a.most_frequent} most frequent of' if a.most_frequent is not None else
            f'ranks {band[0]}-{band[1]} (0 = most masks) of the')
    lo, hi = min(counts.get(m, 0) for m in chosen), max(counts.get(m, 0) for m in chosen)
    comments = [f'{what} {len(ranked)} classes of {a.of} by training masks ({os.path.basename(source)}): '
                f'{lo}-{hi} masks each',
                'made by: python -m util.data.subsets ' + ' '.join(sys.argv[1:] if argv is None else argv),
                'MID,Name in hierarchy order']
    write_class_list(a.out, hierarchy, chosen, comments)
    print(f'{a.out}: {len(chosen)} classes, {lo}-{hi} training masks each')


if __name__ == '__main__':
    raise SystemExit(run(main))
