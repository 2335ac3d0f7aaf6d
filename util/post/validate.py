"""Check a submission as the competition would, before uploading gigabytes.

Checks: the header; every test id exactly once (given the id list, e.g. sample_empty_submission.csv);
positive integer sizes that match the known image sizes (from the id list or a sizes CSV); well-formed
``LabelName Confidence EncodedMask`` triples; labels in the class list; finite confidences in [0, 1];
every EncodedMask base64 + zlib + COCO RLE whose runs cover exactly ImageHeight x ImageWidth pixels
(mask_codec.check_encoded: the decoder every other step uses, in the compressed domain, batched per
image); no double quotes (the format has none). A last line without its newline is a warning: the file
may have been cut at a row boundary.
Detections per image and the file size are reported, and flagged against limits when given.

Every problem is listed as ``file:line: image id: what``; the submission streams through in one pass,
holding only the ids seen (and the id list).

    validate_submission(path, ids, classes, sizes, max_dets, max_bytes)   -> ValidationReport

    python -m util.post.validate SUB.csv [--ids sample_empty_submission.csv] [--sizes CSV]
                                       [--classes all|FILE] [--max-dets N] [--max-bytes N]
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field

from ..common.cli import add_progress_flag, run
from ..common.cli import progress as progress_bar
from ..common.errors import DataError
from ..common.hierarchy import class_list
from ..common.mask_codec import check_encoded, rle_areas
from ..common.submission import (
    HEADER,
    SubmissionError,
    parse_confidence,
    parse_row,
    read_image_list,
    split_line,
)
from ..common.textio import open_text


@dataclass
class ValidationReport:
    path: str
    problems: list[str] = field(default_factory=list)   # the first ``max_listed``
    warnings: list[str] = field(default_factory=list)
    n_problems: int = 0
    images: int = 0
    expected_images: int | None = None
    detections: int = 0
    max_per_image: int = 0
    max_image: str = ''
    empty_masks: int = 0
    file_bytes: int = 0
    max_dets: int | None = None
    max_bytes: int | None = None
    max_listed: int = 100

    def add(self, message: str) -> None:
        self.n_problems += 1
        if len(self.problems) < self.max_listed:
            self.problems.append(message)

    @property
    def ok(self) -> bool:
        return self.n_problems == 0

    def summary(self) -> str:
        limit = lambda v: f'limit {v}' if v is not None else 'no limit set'
        expected = f' of {self.expected_images} expected' if self.expected_images is not None else ''
        mean = self.detections / self.images if self.images else 0.0
        return '\n'.join([
            f'images: {self.images}{expected}',
            f'detections: {self.detections} ({mean:.1f} per image, at most {self.max_per_image} in '
            f'{self.max_image or "-"}; {limit(self.max_dets)})',
            f'empty masks: {self.empty_masks} (the scorer drops them)',
            f'file size: {self.file_bytes / 2**20:.1f} MiB ({limit(self.max_bytes)})',
            f'problems: {self.n_problems}' + ('' if self.n_problems <= len(self.problems)
                                               else f' ({len(self.problems)} listed)'),
        ])


def _check_detections(rep: ValidationReport, parts: list[str], width: int, height: int, where: str,
                      classes: set[str] | None) -> None:
    if len(parts) % 3:
        rep.add(f'{where}: PredictionString has {len(parts)} fields, not a multiple of 3')
        return
    for k in range(0, len(parts), 3):
        at = f'{where}: detection {k // 3 + 1}'
        if classes is not None and parts[k] not in classes:
            rep.add(f'{at}: label {parts[k]!r} is not in the class list')
        try:
            parse_confidence(parts[k + 1], at)
        except SubmissionError as e:
            rep.add(str(e))
    if not parts:
        return
    rles, problems = check_encoded(parts[2::3], height, width)
    for k, problem in problems:
        rep.add(f'{where}: detection {k + 1}: {problem}')
    good = [r for r in rles if r is not None]
    if good:
        rep.empty_masks += int((rle_areas(good) == 0).sum())


def _ends_with_newline(path: str) -> bool:
    with open(path, 'rb') as f:
        if f.seek(0, os.SEEK_END) == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b'\n'


def validate_submission(path: str, ids: str | None = None, classes: list[str] | None = None,
                        sizes: str | None = None, max_dets: int | None = None, max_bytes: int | None = None,
                        max_listed: int = 100, progress: bool = False) -> ValidationReport:
    rep = ValidationReport(path, max_dets=max_dets, max_bytes=max_bytes, max_listed=max_listed)
    known: dict[str, tuple[int, int]] = {}          # image sizes: the sizes CSV first, then the id list
    if sizes:
        known.update((i, (w, h)) for i, w, h in read_image_list(sizes) if w is not None)
    expected = None                                  # test ids, in list order
    if ids:
        expected = {}
        for image_id, w, h in read_image_list(ids):
            expected[image_id] = None
            if w is not None:
                known.setdefault(image_id, (w, h))
        rep.expected_images = len(expected)
    class_set = set(classes) if classes is not None else None
    seen: dict[str, int] = {}
    rep.file_bytes = os.path.getsize(path)
    if not _ends_with_newline(path):
        rep.warnings.append(f'{path}: the last line has no newline: was the file cut short?')
    with open_text(path) as f:
        first = next(f, None)
        if first is None:
            rep.add(f'{path}:1: empty file, expected the header {",".join(HEADER)}')
            return rep
        try:
            header = split_line(first, path, 1)
            if header != HEADER:
                rep.add(f'{path}:1: header {header!r}, expected {",".join(HEADER)}')
        except SubmissionError as e:
            rep.add(str(e))
        for line, text in enumerate(progress_bar(f, progress, desc='validate', unit='img'), start=2):
            try:
                r = parse_row(split_line(text, path, line), path, line, parse=False)
            except SubmissionError as e:
                rep.add(str(e))
                continue
            where = f'{path}:{line}: image {r.image_id}'
            rep.images += 1
            if r.image_id in seen:
                rep.add(f'{where}: listed again (first at line {seen[r.image_id]})')
            else:
                seen[r.image_id] = line
            if expected is not None and r.image_id not in expected:
                rep.add(f'{where}: not a test image (not in {ids})')
            w, h = known.get(r.image_id, (None, None))
            if w is not None and (w, h) != (r.width, r.height):
                rep.add(f'{where}: size {r.width}x{r.height}, the image is {w}x{h}')
            parts = r.text.split()
            n = len(parts) // 3
            rep.detections += n
            if n > rep.max_per_image:
                rep.max_per_image, rep.max_image = n, r.image_id
            if max_dets is not None and n > max_dets:
                rep.add(f'{where}: {n} detections, more than the limit {max_dets}')
            _check_detections(rep, parts, r.width, r.height, where, class_set)
    if expected is not None:
        missing = [i for i in expected if i not in seen]
        for image_id in missing[:max_listed]:
            rep.add(f'{path}: image {image_id} is missing (listed in {ids})')
        rep.n_problems += max(0, len(missing) - max_listed)
    if max_bytes is not None and rep.file_bytes > max_bytes:
        rep.add(f'{path}: {rep.file_bytes} bytes, more than the limit {max_bytes}')
    return rep


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog='python -m util.post.validate',
                                     description='Check a submission CSV as the competition would.')
    parser.add_argument('submission')
    parser.add_argument('--ids', help='test id list: sample_empty_submission.csv (with sizes) or one id '
                                      'per line')
    parser.add_argument('--sizes', help='CSV ImageID,ImageWidth,ImageHeight of known image sizes')
    parser.add_argument('--classes', default='all', help='class subset name or MID file (default: all 300)')
    parser.add_argument('--max-dets', type=int, default=None, help='flag images with more detections')
    parser.add_argument('--max-bytes', type=int, default=None, help='flag a larger file')
    parser.add_argument('--max-listed', type=int, default=100, help='problems to list (all are counted)')
    add_progress_flag(parser)
    args = parser.parse_args(argv)
    rep = validate_submission(args.submission, args.ids, class_list(args.classes), args.sizes,
                              args.max_dets, args.max_bytes, args.max_listed, progress=args.progress)
    for problem in rep.problems:
        print(problem)
    for warning in rep.warnings:
        print(f'warning: {warning}', file=sys.stderr)
    print(rep.summary())
    if not rep.ok:
        raise DataError(f'{args.submission}: INVALID, {rep.n_problems} problems')
    print(f'{args.submission}: OK', file=sys.stderr)


if __name__ == '__main__':
    sys.exit(run(main))
