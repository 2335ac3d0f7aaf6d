"""What the raters verified per image: the federated fields of the annotation files.

Open Images is annotated federatedly: per image some classes are verified present or absent (the
image-level labels CSV, ``Confidence`` 1 / 0), the present ones are boxed (the bbox CSV) and only some boxes
got a mask (the masks CSV). Training that keeps only the masks teaches every unmasked box and every object
of an unverified class as background. This module reads the two extra CSVs into, per image:

- ``verified_pos``: class indices (of the annotation file's subset) verified present. As the metric does, a
  positive label counts for itself and every ancestor, and so does every box or mask row of the image (the
  metric's evaluatable classes are the expanded labels plus the expanded GT classes);
- ``verified_neg``: class indices verified absent; a negative label counts for itself and every descendant;
- box-only instances: bbox rows of subset classes that no mask row joins (same image and label, box IoU
  >= 0.5, one to one, best IoU first: the metric's join), group-of flag kept. They become instances with
  ``ignore_flag=1`` and no mask: ignore regions in training.

    fed = read_federated(bbox_csvs, labels_csvs, mask_boxes, hierarchy, mids, expand)
    fed.attach(items)      # adds the fields to annotation-file items (util.data.annotations)

Pure Python / numpy / pandas: ``util.data`` may use only ``util.common``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..common.errors import DataError
from ..common.hierarchy import ClassIndex, Hierarchy
from ..common.oid_files import BBOX_COLUMNS, LABELS_COLUMNS, iter_rows

JOIN_MIN_IOU = 0.5          # the metric's mask-to-box join threshold (util.metric.groundtruth)


@dataclass
class FederatedLabels:
    """Per image: verified class indices and box-only boxes (normalised x1, y1, x2, y2)."""
    verified_pos: dict = field(default_factory=dict)    # image id -> set of class indices
    verified_neg: dict = field(default_factory=dict)    # image id -> set of class indices
    box_only: dict = field(default_factory=dict)        # image id -> [(labels tuple, (x1, y1, x2, y2), group_of)]
    images: set = field(default_factory=set)            # image ids the bbox / labels CSVs mention
    unknown_label_rows: int = 0

    def attach(self, items: list) -> None:
        """Add ``verified_pos`` / ``verified_neg`` and the box-only instances to the annotation items of
        the images the CSVs mention (in place); an image they do not mention (another split merged in
        without its CSVs) keeps the old format, which means "every class verified". Box-only boxes go to
        pixels with the item's size, clipped."""
        for item in items:
            image_id = item['img_id']
            if image_id not in self.images:
                continue
            pos = set(self.verified_pos.get(image_id, ()))
            pos.update(int(inst['bbox_label']) for inst in item['instances'])   # annotated = present
            item['verified_pos'] = sorted(pos)
            item['verified_neg'] = sorted(self.verified_neg.get(image_id, ()))
            w, h = float(item['width']), float(item['height'])
            for labels, (x1, y1, x2, y2), group_of in self.box_only.get(image_id, ()):
                box = [min(max(x1 * w, 0.0), w), min(max(y1 * h, 0.0), h),
                       min(max(x2 * w, 0.0), w), min(max(y2 * h, 0.0), h)]
                if box[2] <= box[0] or box[3] <= box[1]:
                    continue
                for label in labels:
                    item['instances'].append({'bbox': list(box), 'bbox_label': int(label), 'ignore_flag': 1,
                                              'group_of': int(group_of)})


def _float(value: str, where: str, name: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise DataError(f'{where}: {name} {value!r} is not a number') from None
    if not math.isfinite(x):
        raise DataError(f'{where}: {name} {value!r} is not finite')
    return x


def read_image_labels(path: str, expansion: ClassIndex, fed: FederatedLabels) -> None:
    """Image-level labels CSV -> ``fed.verified_pos`` / ``verified_neg`` (expanded, subset indices)."""
    for line, (image_id, label, conf) in iter_rows(path, LABELS_COLUMNS):
        c = _float(conf, f'{path}:{line}', 'Confidence')
        if c not in (0.0, 1.0):
            raise DataError(f'{path}:{line}: Confidence {conf!r}, expected 0 or 1')
        if not image_id:
            raise DataError(f'{path}:{line}: empty ImageID')
        fed.images.add(image_id)
        if not expansion.known(label):
            fed.unknown_label_rows += 1
            continue
        labels = expansion.up(label) if c == 1.0 else expansion.down(label)
        if labels:
            (fed.verified_pos if c == 1.0 else fed.verified_neg).setdefault(image_id, set()).update(labels)


def read_bbox_rows(path: str) -> pd.DataFrame:
    """Bbox CSV -> DataFrame(ImageID, LabelName, x1, y1, x2, y2 normalised, group_of, line), checked."""
    ids, labels, boxes, groups, lines = [], [], [], [], []
    for line, (image_id, label, *coords, group) in iter_rows(path, BBOX_COLUMNS):
        where = f'{path}:{line}'
        xmin, xmax, ymin, ymax = (_float(v, where, n) for v, n in zip(coords, BBOX_COLUMNS[2:6]))
        for v, n in zip((xmin, xmax, ymin, ymax), BBOX_COLUMNS[2:6]):
            if not -1e-3 <= v <= 1 + 1e-3:
                raise DataError(f'{where}: {n} {v:g} is outside [0, 1]')
        if xmin > xmax or ymin > ymax:
            raise DataError(f'{where}: min > max in the box {xmin:g} {xmax:g} {ymin:g} {ymax:g}')
        g = _float(group, where, 'IsGroupOf')
        if g not in (0.0, 1.0, -1.0):
            raise DataError(f'{where}: IsGroupOf {group!r}, expected 0, 1 or -1')
        if not image_id:
            raise DataError(f'{where}: empty ImageID')
        ids.append(image_id)
        labels.append(label)
        boxes.append((xmin, ymin, xmax, ymax))
        groups.append(g != 0)
        lines.append(line)
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return pd.DataFrame({'ImageID': ids, 'LabelName': labels, 'x1': b[:, 0], 'y1': b[:, 1], 'x2': b[:, 2],
                         'y2': b[:, 3], 'group_of': np.asarray(groups, bool),
                         'line': np.asarray(lines, np.int64)})


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` with every box of ``b`` (x1, y1, x2, y2)."""
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def unjoined_boxes(mask_boxes: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Indices of ``boxes`` that no mask box joins: pairs by best IoU first (>= JOIN_MIN_IOU), one to one,
    ties to the first mask then the first box (the metric's join)."""
    if not len(mask_boxes):
        return np.arange(len(boxes))
    iou = _iou_matrix(mask_boxes, boxes)
    k, j = np.nonzero(iou >= JOIN_MIN_IOU)
    order = np.lexsort((j, k, -iou[k, j]))
    used_masks, used_boxes = set(), set()
    for t in order:
        if k[t] in used_masks or j[t] in used_boxes:
            continue
        used_masks.add(k[t])
        used_boxes.add(j[t])
    return np.asarray([i for i in range(len(boxes)) if i not in used_boxes], np.int64)


def box_only_rows(bbox: pd.DataFrame, masks: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``bbox`` without a mask. ``masks`` has ImageID, LabelName and x1, y1, x2, y2 (normalised)."""
    key_b = bbox['ImageID'] + '\t' + bbox['LabelName']
    key_m = masks['ImageID'] + '\t' + masks['LabelName']
    masked_keys = set(key_m)
    in_group = key_b.isin(masked_keys).to_numpy()
    keep = ~in_group                                       # no mask of that label in that image at all
    if in_group.any():
        cols = ['x1', 'y1', 'x2', 'y2']
        m_groups = {k: g for k, g in masks[cols].groupby(key_m.to_numpy(), sort=False)}
        sub = bbox[in_group]
        for key, rows in sub[cols].groupby(key_b[in_group].to_numpy(), sort=False):
            free = unjoined_boxes(m_groups[key].to_numpy(np.float64), rows.to_numpy(np.float64))
            keep[bbox.index.get_indexer(rows.index[free])] = True
    return bbox[keep]


def read_federated(bbox_csvs, labels_csvs, mask_boxes: pd.DataFrame, hierarchy: Hierarchy, mids,
                   expand: bool) -> FederatedLabels:
    """The federated fields of the images, for the class list ``mids`` (an annotation file's subset).

    ``mask_boxes``: the mask rows (ImageID, LabelName, x1, y1, x2, y2 normalised) the masked instances come
    from, for the join. ``expand``: box-only boxes are emitted once per ancestor in the subset too (as the
    masks of a parent subset are); verified labels always expand as the metric does.
    """
    expansion = ClassIndex(mids, hierarchy)
    fed = FederatedLabels()
    for path in labels_csvs or ():
        read_image_labels(path, expansion, fed)
    index = expansion.index
    for path in bbox_csvs or ():
        rows = read_bbox_rows(path)
        fed.images.update(rows['ImageID'].tolist())
        known = rows['LabelName'].map(lambda m: m in hierarchy.parents).to_numpy(bool)
        fed.unknown_label_rows += int((~known).sum())
        rows = rows[known]
        _add_present(fed, expansion, rows)
        for image_id, label, x1, y1, x2, y2, g in _box_only_tuples(box_only_rows(rows, mask_boxes)):
            labels = tuple(sorted(expansion.up(label))) if expand else \
                ((index[label],) if label in index else ())
            if labels:
                fed.box_only.setdefault(image_id, []).append((labels, (x1, y1, x2, y2), bool(g)))
    if bbox_csvs or labels_csvs:
        _add_present(fed, expansion, mask_boxes)
    return fed


def _add_present(fed: FederatedLabels, expansion: ClassIndex, rows: pd.DataFrame) -> None:
    """GT rows (boxes or masks) make their class and its ancestors present, as in the metric."""
    for image_id, label in zip(rows['ImageID'].tolist(), rows['LabelName'].tolist()):
        up = expansion.up(label)
        if up:
            fed.verified_pos.setdefault(image_id, set()).update(up)


def _box_only_tuples(df: pd.DataFrame):
    cols = ['ImageID', 'LabelName', 'x1', 'y1', 'x2', 'y2', 'group_of']
    return zip(*(df[c].tolist() for c in cols))
