"""Submission CSV I/O (Kaggle format), streaming and atomic.

A submission has the header ``ImageID,ImageWidth,ImageHeight,PredictionString`` and one row per test image;
``PredictionString`` is space-separated triples ``LabelName Confidence EncodedMask`` (empty when none).
Files run to gigabytes, so reading yields one image at a time and writing goes to a temporary name that is
renamed into place only when complete.

    iter_submission(path)            -> SubmissionRow per image (with its 1-based line number)
    iter_lockstep(paths)             -> tuple of rows per image, several submissions read side by side
    read_image_list(path)            -> (image_id, width, height) per line of an id list or sample CSV
    format_prediction_string(dets)   [(label, score, encoded), ...] -> str
    SubmissionWriter(path)           context manager: .write(image_id, w, h, dets); renamed on success
"""
from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from typing import Iterator

from .atomic import AtomicWriter
from .errors import DataError

HEADER = ['ImageID', 'ImageWidth', 'ImageHeight', 'PredictionString']

csv.field_size_limit(sys.maxsize)


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


def parse_prediction_string(text: str, where: str = '') -> list[tuple[str, float, str]]:
    parts = text.split()
    if len(parts) % 3:
        raise SubmissionError(f'{where}: PredictionString has {len(parts)} fields, not a multiple of 3')
    dets = []
    for i in range(0, len(parts), 3):
        try:
            score = float(parts[i + 1])
        except ValueError:
            raise SubmissionError(f'{where}: confidence {parts[i + 1]!r} is not a number') from None
        dets.append((parts[i], score, parts[i + 2]))
    return dets


def parse_row(row: list[str], path: str, line: int, parse: bool = True) -> SubmissionRow:
    """One CSV row (already split) -> SubmissionRow; errors name ``path:line``."""
    where = f'{path}:{line}'
    if len(row) != 4:
        raise SubmissionError(f'{where}: {len(row)} columns, expected 4')
    try:
        width, height = int(row[1]), int(row[2])
    except ValueError:
        raise SubmissionError(f'{where}: image {row[0]}: width/height {row[1]!r}/{row[2]!r} '
                              'are not integers') from None
    dets = parse_prediction_string(row[3], f'{where}: image {row[0]}') if parse else []
    return SubmissionRow(line, row[0], width, height, dets, row[3])


def iter_submission(path: str, parse: bool = True) -> Iterator[SubmissionRow]:
    """Yield one row per image. With ``parse=False`` detections stay unparsed (``[]``) for speed."""
    with open(path, newline='') as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != HEADER:
            raise SubmissionError(f'{path}:1: header {header!r}, expected {",".join(HEADER)}')
        for row in reader:
            yield parse_row(row, path, reader.line_num, parse)


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
    with open(path, newline='') as f:
        first = f.readline()
        f.seek(0)
        if first.startswith('ImageID'):
            reader = csv.DictReader(f)
            sized = {'ImageWidth', 'ImageHeight'} <= set(reader.fieldnames or ())
            for row in reader:
                w, h = (row['ImageWidth'], row['ImageHeight']) if sized else ('', '')
                try:
                    yield row['ImageID'], int(w) if w else None, int(h) if h else None
                except (TypeError, ValueError):
                    raise SubmissionError(f'{path}:{reader.line_num}: image {row["ImageID"]}: '
                                          f'width/height {w!r}/{h!r} are not integers') from None
        else:
            for line in f:
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


class SubmissionWriter:
    """Write a submission row by row; the file appears under its name only when complete."""

    def __init__(self, path: str, score_format: str = '.6g'):
        self._atomic = AtomicWriter(path)
        self.score_format = score_format

    def __enter__(self):
        self.f = self._atomic.__enter__()
        self.writer = csv.writer(self.f, lineterminator='\n')
        self.writer.writerow(HEADER)
        return self

    def write(self, image_id: str, width: int, height: int, dets) -> None:
        self.writer.writerow([image_id, int(width), int(height),
                              format_prediction_string(dets, self.score_format)])

    def write_raw(self, image_id: str, width: int, height: int, prediction_string: str) -> None:
        """Pass a PredictionString through untouched (merging shards never re-parses masks)."""
        self.writer.writerow([image_id, int(width), int(height), prediction_string])

    def __exit__(self, exc_type, exc, tb):
        return self._atomic.__exit__(exc_type, exc, tb)
