"""Results -> submission CSV for one shard: the challenge's mask encoding, a score threshold, a cap.

Per image, detections scoring at least ``score_thr`` are kept, ordered by score (highest first; ties keep
the order of the results file), cut to the ``top_k`` best and written as ``LabelName Confidence
EncodedMask`` triples. RLE counts become EncodedMask by zlib + base64 alone (``mask_codec.rle_to_encoded``),
never through a dense mask, which is what makes this step cheap at full image size. An image without
detections keeps its row.

Each record is checked before anything is written, so that no broken mask reaches a submission: a positive
size, ``labels`` a list of class indices, scores numbers in [0, 1] (not booleans), every ``counts`` an
ASCII string whose runs cover exactly height x width (``mask_codec.check_rles``, compressed domain), each
image once. Errors name the results file's line and the image.

Confidences are written with ``score_format`` ('.6g' by default); later steps write them back exactly as
they read them.

Given an id list (the shard's ids, or a sample submission with sizes), every listed image gets a row in
the list's order, empty when the results lack it; the results must then follow the list's order.

    convert_record(record, classes, score_thr, top_k)   -> [(label, score, EncodedMask), ...]
    results_to_submission(results, out, ...)             -> ConvertStats

    python -m util.post.to_submission RESULTS -o OUT.csv [--ids IDS] [--score-thr T] [--top-k K]
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

from ..common.cli import add_progress_flag, run
from ..common.cli import progress as progress_bar
from ..common.errors import DataError
from ..common.mask_codec import check_rles, rle_to_encoded
from ..common.submission import SubmissionWriter, read_image_list
from .results_io import ResultRecord, iter_results, read_classes


@dataclass
class ConvertStats:
    images: int = 0
    detections_in: int = 0
    detections_out: int = 0
    missing_filled: int = 0     # listed images absent from the results, written as empty rows

    def __str__(self):
        return (f'{self.images} images, {self.detections_out} of {self.detections_in} detections kept, '
                f'{self.missing_filled} listed images missing from the results (empty rows)')


def check_record(rec: ResultRecord, n_classes: int, where: str) -> list[dict]:
    """The record's masks as checked bytes-counts RLEs; DataError naming ``where`` for anything that
    would make a wrong submission row."""
    if type(rec.width) is not int or type(rec.height) is not int or rec.width <= 0 or rec.height <= 0:
        raise DataError(f'{where}: image size {rec.width}x{rec.height} (WxH) is not positive')
    for name, values in (('labels', rec.labels), ('scores', rec.scores)):
        if not isinstance(values, list):
            raise DataError(f'{where}: {name} is a {type(values).__name__}, not a list')
    for k, label in enumerate(rec.labels):
        if type(label) is not int or not 0 <= label < n_classes:
            raise DataError(f'{where}: detection {k + 1}: label {label!r} is not a class index '
                            f'0..{n_classes - 1}')
    for k, score in enumerate(rec.scores):
        if type(score) not in (int, float) or not (math.isfinite(score) and 0 <= score <= 1):
            raise DataError(f'{where}: detection {k + 1}: score {score!r} is not a number in [0, 1]')
    return check_rles(rec.rles, rec.height, rec.width, where)


def convert_record(rec: ResultRecord, classes: list[str], score_thr: float = 0.0,
                   top_k: int | None = None, where: str = '') -> list[tuple[str, float, str]]:
    """One image's detections as submission triples, best first (the record checked first)."""
    rles = check_record(rec, len(classes), where or f'image {rec.image_id}')
    scores = rec.scores
    keep = sorted((i for i in range(len(scores)) if scores[i] >= score_thr), key=lambda i: -scores[i])
    if top_k is not None:
        keep = keep[:top_k]
    return [(classes[rec.labels[i]], scores[i], rle_to_encoded(rles[i])) for i in keep]


def results_to_submission(results: str, out: str, score_thr: float = 0.0, top_k: int | None = None,
                          ids: str | None = None, score_format: str = '.6g',
                          progress: bool = False) -> ConvertStats:
    """Convert one results file; the CSV appears only when complete."""
    classes = read_classes(results)
    stats = ConvertStats()
    records = enumerate(iter_results(results), start=2)    # line numbers, for messages
    seen: dict[str, int] = {}
    with SubmissionWriter(out, score_format) as writer:
        def emit(line, rec):
            where = f'{results}:{line}: image {rec.image_id}'
            first = seen.setdefault(rec.image_id, line)
            if first != line:
                raise DataError(f'{where}: listed again (first on line {first})')
            dets = convert_record(rec, classes, score_thr, top_k, where)
            stats.images += 1
            stats.detections_in += len(rec.scores)
            stats.detections_out += len(dets)
            writer.write(rec.image_id, rec.width, rec.height, dets)

        if ids is None:
            for line, rec in progress_bar(records, progress, desc='results->csv', unit='img'):
                emit(line, rec)
            return stats
        line, rec = next(records, (None, None))
        for image_id, width, height in progress_bar(read_image_list(ids), progress, desc='results->csv',
                                                    unit='img'):
            if rec is not None and rec.image_id == image_id:
                if width is not None and (width, height) != (rec.width, rec.height):
                    raise DataError(f'{results}:{line}: image {image_id} is {rec.width}x{rec.height}, '
                                    f'{ids} says {width}x{height}')
                emit(line, rec)
                line, rec = next(records, (None, None))
                continue
            if width is None:
                raise DataError(f'{ids}: image {image_id} is not in {results} (or the results are out of '
                                'the list\'s order) and the list gives no size for an empty row')
            writer.write(image_id, width, height, [])
            stats.images += 1
            stats.missing_filled += 1
        if rec is not None:
            raise DataError(f'{results}:{line}: image {rec.image_id} is not in {ids}, or the results '
                            'do not follow its order')
    return stats


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog='python -m util.post.to_submission',
        description='Convert a results file (one test shard) into a submission CSV.')
    parser.add_argument('results', help='results file written by the tester (.jsonl or .jsonl.gz)')
    parser.add_argument('-o', '--out', required=True, help='submission CSV to write')
    parser.add_argument('--ids', help='id list or sample submission: one row per listed image, in its '
                                      'order (missing images get empty rows)')
    parser.add_argument('--score-thr', type=float, default=0.0, help='keep scores >= this (default 0)')
    parser.add_argument('--top-k', type=int, default=None, help='keep at most K detections per image')
    parser.add_argument('--score-format', default='.6g', help="format spec of confidences (default '.6g')")
    add_progress_flag(parser)
    args = parser.parse_args(argv)
    try:
        format(0.5, args.score_format)
    except ValueError:
        raise DataError(f'--score-format {args.score_format!r} is not a float format spec') from None
    stats = results_to_submission(args.results, args.out, args.score_thr, args.top_k, args.ids,
                                  args.score_format, progress=args.progress)
    print(f'{args.out}: {stats}', file=sys.stderr)


if __name__ == '__main__':
    sys.exit(run(main))
