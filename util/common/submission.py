"""Submission CSV I/O (Kaggle format), streaming and atomic.

A submission has the header ``ImageID,ImageWidth,ImageHeight,PredictionString`` and one row per test image;
``PredictionString`` is space-separated triples ``LabelName Confidence EncodedMask`` (empty when none).
Files run to gigabytes, so reading yields one image at a time and writing goes to a temporary name that is
renamed into place only when complete.

Reading is strict, because every later step trusts it: the format has no quoting (a double quote anywhere
is an error, where a CSV parser would swallow the rows up to the next one), ImageWidth/ImageHeight are
positive integers, confidences are finite numbers in [0, 1], an ImageID appears once. Errors name the file
and the physical line (and the image). Text is read through ``textio.open_text`` (UTF-8, BOM accepted).

    iter_lines(path)                 -> (line number, fields) per data row, the header checked
    split_line(text, path, line)     one physical line -> its fields (no quoting)
    parse_row(fields, path, line)    -> SubmissionRow, sizes checked (and the triples unless parse=False)
    iter_submission(path)            -> SubmissionRow per image (with its 1-based line number)
    iter_lockstep(paths)             -> tuple of rows per image, several submissions read side by side
    read_image_list(path)            -> (image_id, width, height) per line of an id list or sample CSV
    format_prediction_string(dets)   [(label, score, encoded), ...] -> str
    SubmissionWriter(path)           context manager: .write(image_id, w, h, dets); renamed on success
"""
from __future__ import annotations

import csv
import itertools
import re
from dataclasses import dataclass
from typing import Iterator

from .atomic import AtomicWriter
from .errors import DataError
from .textio import open_text

HEADER = ['ImageID', 'ImageWidth', 'ImageHeight', 'PredictionString']


class SubmissionError(DataError):
    """A malformed submission row; the message names file:line."""


@dataclass
class SubmissionRow:
    line: int
    image_id: str
    width: int
    height: int
    detections: list[tuple[str, float, str]]  # (label, score, encoded mask)
    text: str = ''                             # the PredictionString as read (passed through by merges)


def parse_confidence(text: str, where: str) -> float:
    """A confidence as written in a PredictionString -> float in [0, 1] (no NaN, inf, '1_0')."""
    try:
        score = float(text) if '_' not in text else None
    except ValueError:
        score = None
    if score is None or not 0.0 <= score <= 1.0:          # also False for NaN
        raise SubmissionError(f'{where}: confidence {text!r} is not a number in [0, 1]')
    return score


def parse_prediction_string(text: str, where: str = '') -> list[tuple[str, float, str]]:
    parts = text.split()
    if len(parts) % 3:
        raise SubmissionError(f'{where}: PredictionString has {len(parts)} fields, not a multiple of 3')
    return [(parts[i], parse_confidence(parts[i + 1], f'{where}: detection {i // 3 + 1}'), parts[i + 2])
            for i in range(0, len(parts), 3)]


def split_prediction_string(text: str, where: str = '') -> list[str]:
    """A PredictionString's fields, for steps that copy triples as text: the field count and every
    confidence are checked as ``parse_prediction_string`` checks them, but no triple is built. On an error
    the string is parsed in full, so the message is the parser's own (with the detection's number)."""
    parts = text.split()
    try:
        if len(parts) % 3:
            raise SubmissionError(where)
        for k in range(1, len(parts), 3):
            parse_confidence(parts[k], where)
    except SubmissionError:
        parse_prediction_string(text, where)
        raise
    return parts


def _size(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and int(text) > 0 else None


def split_line(text: str, path: str, line: int) -> list[str]:
    """One physical line (line ending included or not) -> its comma-separated fields."""
    text = text.rstrip('\r\n')
    quote = text.find('"')
    if quote >= 0:
        raise SubmissionError(f'{path}:{line}: a double quote at column {quote + 1}: the submission format '
                              'has no quoting')
    return text.split(',') if text else []


def parse_row(row: list[str], path: str, line: int, parse: bool = True) -> SubmissionRow:
    """One row's fields -> SubmissionRow; errors name ``path:line`` (and the image)."""
    where = f'{path}:{line}'
    if len(row) != 4:
        raise SubmissionError(f'{where}: {len(row)} columns, expected 4')
    if not row[0]:
        raise SubmissionError(f'{where}: empty ImageID')
    width, height = _size(row[1]), _size(row[2])
    if width is None or height is None:
        raise SubmissionError(f'{where}: image {row[0]}: width/height {row[1]!r}/{row[2]!r} '
                              'are not positive integers')
    dets = parse_prediction_string(row[3], f'{where}: image {row[0]}') if parse else []
    return SubmissionRow(line, row[0], width, height, dets, row[3])


def iter_lines(path: str) -> Iterator[tuple[int, list[str]]]:
    """(physical line number, fields) of every data row; the header must be the challenge's."""
    with open_text(path) as f:
        first = next(f, None)
        header = split_line(first, path, 1) if first is not None else None
        if header != HEADER:
            raise SubmissionError(f'{path}:1: header {header!r}, expected {",".join(HEADER)}')
        for line, text in enumerate(f, start=2):
            yield line, split_line(text, path, line)


def iter_submission(path: str, parse: bool = True) -> Iterator[SubmissionRow]:
    """Yield one row per image. With ``parse=False`` detections stay unparsed (``[]``) for speed.
    An ImageID listed twice is an error naming both lines."""
    seen: dict[str, int] = {}
    for line, fields in iter_lines(path):
        row = parse_row(fields, path, line, parse)
        first = seen.setdefault(row.image_id, line)
        if first != line:
            raise SubmissionError(f'{path}:{line}: image {row.image_id} appears twice (first on line {first})')
        yield row


def iter_lockstep(paths: list[str], parse: bool = True) -> Iterator[tuple[SubmissionRow, ...]]:
    """Read several submissions side by side, one image at a time (memory stays one row per file).

    They must list the same images in the same order with the same sizes, as the per-shard outputs of
    one pipeline do; anything else is an error naming both places.
    """
    readers = [iter_submission(p, parse) for p in paths]
    while True:
        rows = [next(r, None) for r in readers]
        ended = [i for i, r in enumerate(rows) if r is None]
        if len(ended) == len(rows):
            return
        if ended:
            k = next(i for i, r in enumerate(rows) if r is not None)
            raise SubmissionError(f'{paths[ended[0]]}: ends before image {rows[k].image_id} '
                                  f'({paths[k]}:{rows[k].line})')
        first = rows[0]
        for path, row in zip(paths[1:], rows[1:]):
            if (row.image_id, row.width, row.height) != (first.image_id, first.width, first.height):
                raise SubmissionError(
                    f'{path}:{row.line}: image {row.image_id} {row.width}x{row.height}, but '
                    f'{paths[0]}:{first.line} has {first.image_id} {first.width}x{first.height}: '
                    'inputs must list the same images in the same order')
        yield tuple(rows)


def read_image_list(path: str) -> Iterator[tuple[str, int | None, int | None]]:
    """Yield (image_id, width, height) from a CSV with an ``ImageID`` header (sizes if it has
    ``ImageWidth``/``ImageHeight`` columns, as sample_empty_submission.csv does) or a plain list of ids,
    one per line. Unknown (or empty) sizes are None."""
    with open_text(path) as f:
        first = f.readline()
        lines = itertools.chain([first], f)
        if first.startswith('ImageID'):
            reader = csv.DictReader(lines)
            sized = {'ImageWidth', 'ImageHeight'} <= set(reader.fieldnames or ())
            for row in reader:
                w, h = (row['ImageWidth'], row['ImageHeight']) if sized else ('', '')
                if w or h:
                    w, h = _size(w or ''), _size(h or '')
                    if w is None or h is None:
                        raise SubmissionError(f'{path}:{reader.line_num}: image {row["ImageID"]}: width/height '
                                              f'{row["ImageWidth"]!r}/{row["ImageHeight"]!r} are not positive '
                                              'integers')
                yield row['ImageID'], w or None, h or None
        else:
            for line in lines:
                image_id = line.strip()
                if image_id:
                    yield image_id, None, None


SHORTEST = 'shortest'


def format_score(score: float, score_format: str = '.6g') -> str:
    """``score_format`` is a format spec, or SHORTEST: the shortest text that reads back as the same
    float, which re-writes a confidence read from a CSV exactly as it was (steps after the first)."""
    if score_format == SHORTEST:
        text = repr(float(score))
        return text[:-2] if text.endswith('.0') else text
    return format(score, score_format)


def format_prediction_string(dets, score_format: str = '.6g') -> str:
    if score_format == SHORTEST:
        return ' '.join(f'{label} {format_score(score, SHORTEST)} {enc}' for label, score, enc in dets)
    return ' '.join(f'{label} {format(score, score_format)} {enc}' for label, score, enc in dets)


_UNWRITABLE = re.compile(r'[,"\r\n]')


class SubmissionWriter:
    """Write a submission row by row; the file appears under its name only when complete.

    Rows are written as plain text (the format has no quoting, so a field holding a comma, a quote or a
    line break is refused rather than quoted): the same bytes ``csv.writer`` gives for every valid row,
    at a fraction of its cost on rows of tens of kilobytes.
    """

    def __init__(self, path: str, score_format: str = '.6g'):
        self.path = path
        self._atomic = AtomicWriter(path)
        self.score_format = score_format

    def __enter__(self):
        self.f = self._atomic.__enter__()
        self.f.write(','.join(HEADER) + '\n')
        return self

    def write(self, image_id: str, width: int, height: int, dets) -> None:
        self.write_raw(image_id, width, height, format_prediction_string(dets, self.score_format))

    def write_raw(self, image_id: str, width: int, height: int, prediction_string: str) -> None:
        """Pass a PredictionString through untouched (merging shards never re-parses masks)."""
        if _UNWRITABLE.search(image_id) or _UNWRITABLE.search(prediction_string):
            raise SubmissionError(f'{self.path}: image {image_id}: a comma, quote or line break in a field '
                                  '(the submission format has no quoting)')
        self.f.write(f'{image_id},{int(width)},{int(height)},{prediction_string}\n')

    def __exit__(self, exc_type, exc, tb):
        return self._atomic.__exit__(exc_type, exc, tb)
