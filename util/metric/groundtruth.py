"""The challenge's raw ground-truth files -> per-image GT for the metric (``rules.GroundTruth``).

Inputs are the files as Google distributes them (columns in ``util.common.oid_files``): the masks CSV
with its mask PNGs, the box CSV and the image-level labels CSV, read strictly (``oid_files.iter_rows``);
a box outside [0, 1] or with min > max is an error naming its file and line. Each mask row is joined to
a box row of the same image and label, best box IoU first, one to one; a box row left without a mask is
box-only GT; a mask row that joins no box is reported (its masks CSV line, and the nearest free box row
of its label, if any) and kept as a non-group-of GT with its own box. Rows whose label the hierarchy does
not know are skipped and counted.

    read_ground_truth(masks_csv, bbox_csv, labels_csv, known, image_ids)  -> GroundTruthFiles
    MaskFinder(masks_dir)                 a MaskPath -> its file, in the folder or in its subfolders
    load_ground_truth(record, finder, height, width)   -> GroundTruth with masks as RLE at image size
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from ..common.errors import DataError
from ..common.image_io import read_mask
from ..common.mask_codec import resize_nearest
from ..common.oid_files import BBOX_COLUMNS, LABELS_COLUMNS, MASKS_NEEDED, iter_rows
from .rules import GroundTruth

JOIN_MIN_IOU = 0.5          # a mask row joins a box row only when their boxes overlap at least this much


@dataclass
class ImageRecord:
    """One image's GT rows, before any pixel is read. Boxes are normalised [ymin, xmin, ymax, xmax]."""
    labels: list = field(default_factory=list)
    boxes: list = field(default_factory=list)
    group_of: list = field(default_factory=list)
    mask_files: list = field(default_factory=list)     # MaskPath or None (box-only)
    mask_where: list = field(default_factory=list)     # 'masks.csv:LINE' or None, for messages
    box_where: list = field(default_factory=list)      # 'bbox.csv:LINE' (or the masks CSV's, unjoined)
    image_labels: list = field(default_factory=list)   # [(mid, positive)]

    def add(self, label, box, group_of, mask_file, mask_where, box_where) -> None:
        """One GT object: a row of every parallel list above."""
        for values, value in ((self.labels, label), (self.boxes, box), (self.group_of, group_of),
                              (self.mask_files, mask_file), (self.mask_where, mask_where),
                              (self.box_where, box_where)):
            values.append(value)


@dataclass
class GroundTruthFiles:
    """Per-image records plus what the reading skipped or could not join."""
    images: dict                                       # image id -> ImageRecord, first-seen order
    unknown_label_rows: int = 0
    unjoined_masks: list = field(default_factory=list)  # 'masks.csv:LINE (why)' of mask rows without a box row

    def problems(self) -> list[str]:
        out = []
        if self.unjoined_masks:
            shown = ', '.join(self.unjoined_masks[:3])
            out.append(f'{len(self.unjoined_masks)} mask rows join no box row (kept as non-group-of GT '
                       f'with their own box), e.g. {shown}')
        if self.unknown_label_rows:
            out.append(f'{self.unknown_label_rows} GT rows with labels outside the hierarchy skipped')
        return out


def _floats(values, where: str, names) -> list[float]:
    out = []
    for v, name in zip(values, names):
        try:
            x = float(v)
        except ValueError:
            raise DataError(f'{where}: {name} {v!r} is not a number') from None
        if not math.isfinite(x):
            raise DataError(f'{where}: {name} {v!r} is not finite')
        out.append(x)
    return out


def _box(values, where: str, names) -> tuple:
    """Normalised (ymin, xmin, ymax, xmax) of a row's XMin, XMax, YMin, YMax: in [0, 1], min <= max."""
    xmin, xmax, ymin, ymax = _floats(values, where, names)
    for v, name in zip((xmin, xmax, ymin, ymax), names):
        if not 0.0 <= v <= 1.0:
            raise DataError(f'{where}: {name} {v:g} is outside [0, 1]')
    for lo, hi, (lo_name, hi_name) in ((xmin, xmax, names[:2]), (ymin, ymax, names[2:])):
        if lo > hi:
            raise DataError(f'{where}: {lo_name} {lo:g} > {hi_name} {hi:g}')
    return ymin, xmin, ymax, xmax


def _integer_flag(value: str, where: str, name: str, allowed) -> int:
    try:
        x = float(value)
    except ValueError:
        x = None
    if x is None or x not in allowed:
        raise DataError(f'{where}: {name} {value!r}, expected one of {sorted(allowed)}')
    return int(x)


def _box_iou(a, b) -> float:
    """IoU of two normalised [ymin, xmin, ymax, xmax] boxes."""
    h = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    w = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = h * w
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def read_ground_truth(masks_csv: str, bbox_csv: str, labels_csv: str, known, image_ids=None) -> GroundTruthFiles:
    """Read the three GT CSVs; ``known`` = labels to keep, ``image_ids`` = optional set of images to keep."""
    images: dict[str, ImageRecord] = {}
    out = GroundTruthFiles(images)

    def record(image_id):
        rec = images.get(image_id)
        if rec is None:
            rec = images[image_id] = ImageRecord()
        return rec

    for line, (image_id, label, *coords, group) in iter_rows(bbox_csv, BBOX_COLUMNS):
        if image_ids is not None and image_id not in image_ids:
            continue
        where = f'{bbox_csv}:{line}'
        box = _box(coords, where, BBOX_COLUMNS[2:6])
        is_group = _integer_flag(group, where, 'IsGroupOf', {0, 1, -1}) != 0
        if label not in known:
            out.unknown_label_rows += 1
            continue
        record(image_id).add(label, box, is_group, None, None, where)

    pending: dict[tuple[str, str], list] = {}          # (image, label) -> mask rows
    for line, (name, image_id, label, *coords) in iter_rows(masks_csv, MASKS_NEEDED):
        if image_ids is not None and image_id not in image_ids:
            continue
        where = f'{masks_csv}:{line}'
        box = _box(coords, where, MASKS_NEEDED[3:])
        if not name:
            raise DataError(f'{where}: empty MaskPath')
        if label not in known:
            out.unknown_label_rows += 1
            continue
        pending.setdefault((image_id, label), []).append((name, where, box))
    for (image_id, label), masks in pending.items():
        _join(record(image_id), label, masks, out.unjoined_masks)

    for line, (image_id, label, conf) in iter_rows(labels_csv, LABELS_COLUMNS):
        if image_ids is not None and image_id not in image_ids:
            continue
        positive = _integer_flag(conf, f'{labels_csv}:{line}', 'Confidence', {0, 1}) == 1
        if label not in known:
            out.unknown_label_rows += 1
            continue
        record(image_id).image_labels.append((label, positive))
    return out


def _join(rec: ImageRecord, label: str, masks: list, unjoined: list) -> None:
    """Give each mask row the free box row of its label with the best IoU (>= JOIN_MIN_IOU), one to one."""
    free = [j for j, (l, f) in enumerate(zip(rec.labels, rec.mask_files)) if l == label and f is None]
    pairs = sorted(((-_box_iou(box, rec.boxes[j]), k, j) for k, (_, _, box) in enumerate(masks) for j in free))
    used_masks, used_boxes = set(), set()
    for neg_iou, k, j in pairs:
        if -neg_iou < JOIN_MIN_IOU:
            break
        if k in used_masks or j in used_boxes:
            continue
        used_masks.add(k)
        used_boxes.add(j)
        rec.mask_files[j], rec.mask_where[j] = masks[k][0], masks[k][1]
    for k, (name, where, box) in enumerate(masks):
        if k not in used_masks:
            left = [(_box_iou(box, rec.boxes[j]), j) for j in free if j not in used_boxes]
            if left:
                iou, j = max(left, key=lambda t: (t[0], -t[1]))
                why = f'nearest free box row of its label {rec.box_where[j]}, IoU {iou:.2f}'
            else:
                why = 'no free box row of its label in the image'
            unjoined.append(f'{where} ({why})')
            rec.add(label, box, False, name, where, where)


class MaskFinder:
    """Finds a MaskPath in ``masks_dir`` or in one of its subfolders (Google's ``{split}-masks-{c}``)."""

    def __init__(self, masks_dir: str):
        if not os.path.isdir(masks_dir):
            raise DataError(f'{masks_dir}: masks folder not found')
        self.root = masks_dir
        self.subdirs = sorted(e.path for e in os.scandir(masks_dir) if e.is_dir())

    def __call__(self, name: str, where: str = '') -> str:
        path = os.path.join(self.root, name)
        if os.path.isfile(path):
            return path
        # Google's archives put a mask in the folder named after the first character of its image id.
        likely = [d for d in self.subdirs if d.endswith(f'-{name[:1]}')]
        for d in likely + [d for d in self.subdirs if d not in likely]:
            path = os.path.join(d, name)
            if os.path.isfile(path):
                return path
        raise DataError(f'{where}: mask PNG {name} not found in {self.root} or its subfolders')


@lru_cache(maxsize=256)
def _index_map(size_in: int, size_out: int) -> np.ndarray:
    """The source index of every output row (or column) under ``resize_nearest``."""
    return resize_nearest(np.arange(size_in, dtype=np.int64)[:, None], size_out, 1)[:, 0]


def resized_rle(mask: np.ndarray, height: int, width: int) -> dict:
    """RLE (bytes counts) of ``resize_nearest(mask, height, width)``, resizing only the mask's bounding box.

    The full-size array is allocated column-major (what pycocotools encodes) and stays zero outside the
    object, so a small object in a large image costs little more than its own pixels.
    """
    out = np.zeros((height, width), np.uint8, order='F')
    x, y, w, h = cv2.boundingRect(mask)
    if w and h:
        rmap, cmap = _index_map(mask.shape[0], height), _index_map(mask.shape[1], width)
        i0, i1 = np.searchsorted(rmap, (y, y + h))      # output rows whose source row is in [y, y + h)
        j0, j1 = np.searchsorted(cmap, (x, x + w))
        out[i0:i1, j0:j1] = mask.take(rmap[i0:i1], axis=0).take(cmap[j0:j1], axis=1)
    return mask_utils.encode(out)


def load_ground_truth(rec: ImageRecord, finder: MaskFinder, height: int | None, width: int | None) -> GroundTruth:
    """Read the record's PNGs and resize them (nearest) to the image size; without a size (an image
    nobody predicted on, sizes unknown) they stay at their own resolution: enough to count them."""
    masks = []
    for name, where in zip(rec.mask_files, rec.mask_where):
        if name is None:
            masks.append(None)
            continue
        m = read_mask(finder(name, where))
        masks.append(resized_rle(m, height, width) if height else mask_utils.encode(np.asfortranarray(m)))
    boxes = np.asarray(rec.boxes, np.float64).reshape(-1, 4)
    return GroundTruth(list(rec.labels), boxes, np.asarray(rec.group_of, bool), masks, list(rec.image_labels))
