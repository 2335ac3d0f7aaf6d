"""Google's Open Images challenge files: their names, columns and folder layout, written down once.

Every reader and writer of the raw download (annotation building, the synthetic generator, the metric,
the official-scorer check) takes these from here, so a format fact lives in one place.

    MASKS_COLUMNS, BBOX_COLUMNS, LABELS_COLUMNS   the three ground-truth CSVs' headers, in file order
    MASKS_NEEDED                                  the masks CSV columns the pipeline reads
    SEGMENTATION_COLUMNS                          the official scorer's own segmentation GT format
    IMAGE_EXTENSIONS                              image file endings looked for (any case)
    masks_csv_name(split), bbox_csv_name(split), labels_csv_name(split), split_of_masks_csv(path)
    masks_subdir(split, image_id)                 Google's {split}-masks-{c} folder of a mask PNG
    mask_png_name(image_id, mid, box_id)          a MaskPath as Google names it
    iter_rows(path, columns)                      (line, values) of each data row, read strictly
"""
from __future__ import annotations

import csv
import os
import re

from .errors import DataError
from .textio import open_text

MASKS_COLUMNS = ('MaskPath', 'ImageID', 'LabelName', 'BoxID', 'BoxXMin', 'BoxXMax', 'BoxYMin', 'BoxYMax',
                 'PredictedIoU', 'Clicks')
MASKS_NEEDED = ('MaskPath', 'ImageID', 'LabelName', 'BoxXMin', 'BoxXMax', 'BoxYMin', 'BoxYMax')
BBOX_COLUMNS = ('ImageID', 'LabelName', 'XMin', 'XMax', 'YMin', 'YMax', 'IsGroupOf')
LABELS_COLUMNS = ('ImageID', 'LabelName', 'Confidence')
SEGMENTATION_COLUMNS = ('ImageID', 'LabelName', 'ImageWidth', 'ImageHeight', 'XMin', 'XMax', 'YMin', 'YMax',
                        'IsGroupOf', 'Mask')
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')

_MASKS_CSV_RE = re.compile(r'challenge-\d+-(.+?)-segmentation-masks\.csv$')


def masks_csv_name(split: str) -> str:
    return f'challenge-2019-{split}-segmentation-masks.csv'


def bbox_csv_name(split: str) -> str:
    return f'challenge-2019-{split}-segmentation-bbox.csv'


def labels_csv_name(split: str) -> str:
    return f'challenge-2019-{split}-segmentation-labels.csv'


def split_of_masks_csv(path: str) -> str:
    """``challenge-2019-train-segmentation-masks.csv`` -> ``train`` (else the file's stem)."""
    m = _MASKS_CSV_RE.search(os.path.basename(path))
    return m.group(1) if m else os.path.splitext(os.path.basename(path))[0]


def masks_subdir(split: str, image_id: str) -> str:
    """The archive folder of a mask PNG: Google splits them by the first character of the image id."""
    return f'{split}-masks-{image_id[:1]}'


def mask_png_name(image_id: str, mid: str, box_id: str) -> str:
    return f'{image_id}_{mid.replace("/", "")}_{box_id}.png'


def iter_rows(path: str, columns):
    """Yield (line, [values of ``columns``]) for each data row of a ground-truth CSV.

    Strict, because a damaged file must not become a different ground truth: UTF-8 only (``textio``: a
    BOM is accepted, gzip or latin-1 bytes are refused by name), every named column present, every row as
    wide as the header (a short row is reported as truncated), no row spanning lines (an unbalanced quote
    would swallow the rows after it). Errors are DataErrors naming ``path`` and the row's first line.
    """
    try:
        f = open_text(path)
    except OSError as e:
        raise DataError(f'{path}: cannot open ({e.strerror})') from None
    with f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                raise DataError(f'{path}:1: empty file, expected a header')
            missing = [c for c in columns if c not in header]
            if missing:
                raise DataError(f'{path}:1: missing column(s) {", ".join(missing)}')
            idx = [header.index(c) for c in columns]
            width, end = len(header), reader.line_num
            for row in reader:
                line, end = end + 1, reader.line_num
                if end != line:
                    raise DataError(f'{path}:{line}: a quoted field runs over lines {line}-{end} '
                                    '(unbalanced double quote?)')
                if not row:
                    continue
                if len(row) < width:
                    raise DataError(f'{path}:{line}: truncated row: {len(row)} fields, the header has {width}')
                if len(row) > width:
                    raise DataError(f'{path}:{line}: {len(row)} fields, the header has {width}')
                yield line, [row[i] for i in idx]
        except csv.Error as e:
            raise DataError(f'{path}:{reader.line_num}: not a readable CSV ({e})') from None
