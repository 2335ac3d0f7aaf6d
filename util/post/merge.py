"""Merge shard submissions into one, in the order of the test id list, streaming.

Shards are read side by side, each from its current row; the test id list (sample_empty_submission.csv)
is walked once and each id is taken from the shard whose current row it is. Memory is one row per shard,
whatever the number of images, as long as every shard lists its images in the list's relative order
(the per-shard steps keep the tester's order, which is the list's). Prediction strings are passed
through untouched: merging never parses masks.

Every listed id is written exactly once, in the list's order, and nothing else: an image that a shard
lists twice, that two shards list, or that is not in the list is an error naming the shard's line. An id
found in no shard is an error too (a shard is missing or out of order) unless ``allow_missing``, which
writes it as an empty row with the list's size.

    merge_submissions(shards, ids, out, allow_missing=False)   -> MergeStats

    python -m util.post.merge SHARD.csv [SHARD.csv ...] --ids sample_empty_submission.csv -o OUT
                              [--allow-missing] [--no-progress]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from ..common.cli import add_progress_flag, run
from ..common.cli import progress as progress_bar
from ..common.errors import DataError
from ..common.submission import SubmissionWriter, iter_submission, read_image_list


@dataclass
class MergeStats:
    images: int = 0
    missing_filled: int = 0

    def __str__(self):
        return f'{self.images} images, {self.missing_filled} missing from every shard (empty rows)'


def merge_submissions(shards: list[str], ids: str, out: str, allow_missing: bool = False,
                      progress: bool = False) -> MergeStats:
    readers = [iter_submission(p, parse=False) for p in shards]
    heads = {}                                      # image id -> (shard index, its current row)

    def advance(k):
        row = next(readers[k], None)
        if row is None:
            return
        if row.image_id in heads:
            other = heads[row.image_id]
            raise DataError(f'{shards[k]}:{row.line}: image {row.image_id} is also in '
                            f'{shards[other[0]]}:{other[1].line}')
        heads[row.image_id] = (k, row)

    for k in range(len(readers)):
        advance(k)
    stats = MergeStats()
    with SubmissionWriter(out) as writer:
        for image_id, width, height in progress_bar(read_image_list(ids), progress, desc='merge', unit='img'):
            hit = heads.pop(image_id, None)
            if hit is not None:
                k, row = hit
                writer.write_raw(row.image_id, row.width, row.height, row.text)
                advance(k)
            elif allow_missing and width is not None:
                writer.write(image_id, width, height, [])
                stats.missing_filled += 1
            else:
                why = (' (--allow-missing writes it as an empty row)' if width is not None else
                       ' and the id list gives no size for an empty row')
                raise DataError(f'{ids}: image {image_id} is not the next image of any shard: a shard '
                                f'is missing or not in the list\'s order{why}')
            stats.images += 1
        if heads:
            k, row = min(heads.values(), key=lambda h: h[0])
            raise DataError(f'{shards[k]}:{row.line}: image {row.image_id} is not in {ids}, '
                            'or its shard lists it after an image that the list puts later')
    return stats


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog='python -m util.post.merge',
                                     description='Merge shard submissions in the order of the test ids.')
    parser.add_argument('shards', nargs='+', help='shard submission CSVs (any order)')
    parser.add_argument('--ids', required=True,
                        help='test id list: sample_empty_submission.csv (with sizes) or one id per line')
    parser.add_argument('-o', '--out', required=True)
    parser.add_argument('--allow-missing', action='store_true',
                        help='write images found in no shard as empty rows instead of failing')
    add_progress_flag(parser)
    args = parser.parse_args(argv)
    stats = merge_submissions(args.shards, args.ids, args.out, args.allow_missing, args.progress)
    print(f'{args.out}: {stats}', file=sys.stderr)


if __name__ == '__main__':
    sys.exit(run(main))
