"""Small raw challenge files for the evaluator's file-level tests, with the same data as literal LImages.

``write_dataset`` writes what Google distributes (masks CSV + PNGs at their own resolution, half of them in
``validation-masks-{c}/`` subfolders, box CSV, image-level labels CSV) plus a Kaggle submission, and returns
the LImages the literal metric sees: GT masks resized (nearest) to the image size, boxes as parsed back
from the CSV. One mask row's box is jittered (the join takes the best IoU) and one has no box row at all
(it stays GT with its own box).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field

import cv2
import numpy as np
from _eval_cases import DET_POOL, GT_POOL, random_blob
from _eval_literal import LImage, LObject

from util.common.hierarchy import load_default
from util.common.mask_codec import encode_mask, resize_nearest
from util.common.oid_files import (
    BBOX_COLUMNS,
    LABELS_COLUMNS,
    MASKS_COLUMNS,
    mask_png_name,
    masks_subdir,
)
from util.common.submission import SubmissionWriter


@dataclass
class Dataset:
    root: str
    images: dict = field(default_factory=dict)          # image id -> LImage (the literal's view)
    predictions: dict = field(default_factory=dict)     # image id -> [(label, score, dense mask)]
    sizes: dict = field(default_factory=dict)           # image id -> (height, width)

    def path(self, name):
        return os.path.join(self.root, name)

    def args(self, submission='sub.csv'):
        """The command-line arguments for these files."""
        from util.common.hierarchy import DEFAULT_CLASSES, DEFAULT_HIERARCHY
        return ['--masks-csv', self.path('masks.csv'), '--masks-dir', self.path('masks'),
                '--bbox-csv', self.path('bbox.csv'), '--labels-csv', self.path('labels.csv'),
                '--hierarchy', DEFAULT_HIERARCHY, '--classes', DEFAULT_CLASSES,
                '--submission', self.path(submission)]

    def write_submission(self, name='sub.csv', rows=None, ids=None):
        """A submission of ``self.predictions`` (or of ``rows``: image id -> triples) for ``ids``."""
        ids = list(self.predictions) if ids is None else ids
        with SubmissionWriter(self.path(name)) as w:
            for image_id in ids:
                h, wd = self.sizes[image_id]
                dets = rows[image_id] if rows is not None else [
                    (label, score, encode_mask(m)) for label, score, m in self.predictions[image_id]]
                w.write(image_id, wd, h, dets)
        return self.path(name)


def _fmt(v):
    return f'{v:.6f}'


def write_dataset(root: str, n_images: int = 30, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    hierarchy = load_default()
    ds = Dataset(root)
    os.makedirs(ds.path('masks'), exist_ok=True)
    boxes, masks, labels = [], [], []
    for i in range(n_images):
        image_id = f'{rng.integers(1 << 62):016x}'
        h, w = int(rng.integers(12, 30)), int(rng.integers(12, 30))
        ds.sizes[image_id] = (h, w)
        img = LImage(h, w)
        for k in range(int(rng.integers(0 if i else 1, 5))):
            label = str(rng.choice(GT_POOL))
            ph, pw = int(rng.integers(8, 40)), int(rng.integers(8, 40))       # the PNG's own resolution
            png = random_blob(rng, ph, pw, density=0.9)
            dense = resize_nearest(png, h, w)
            if not dense.any():
                dense = np.zeros((h, w), np.uint8)
                dense[h // 2, w // 2] = 1
                png = cv2.resize(dense, (pw, ph), interpolation=cv2.INTER_NEAREST)
                dense = resize_nearest(png, h, w)
            ys, xs = np.nonzero(dense) if dense.any() else (np.array([0]), np.array([0]))
            box = tuple(float(_fmt(v)) for v in (xs.min() / w, (xs.max() + 1) / w, ys.min() / h, (ys.max() + 1) / h))
            if any(o.label == label and o.box == box for o in img.objects):
                continue                                       # keep the box -> mask join unambiguous
            group = bool(rng.random() < 0.2)
            unjoined = (i == 1 and k == 0)
            box_only = rng.random() < 0.25 and not unjoined
            if not unjoined:
                boxes.append([image_id, label, *map(_fmt, box), int(group)])
            if not box_only:
                name = mask_png_name(image_id, label, f'{k:08x}')
                sub = '' if k % 2 else masks_subdir('validation', image_id)   # flat and Google's layout
                folder = ds.path(os.path.join('masks', sub))
                os.makedirs(folder, exist_ok=True)
                cv2.imwrite(os.path.join(folder, name), png * 255)
                mbox = list(box)
                if i == 2 and k == 0:
                    mbox[1] = min(1.0, mbox[1] + 0.01)        # the join must still find its box row
                masks.append([name, image_id, label, f'{k:08x}', *map(_fmt, mbox), '0.81', '0.1 0.2 1;0.3 0.4 0'])
            img.objects.append(LObject(label, box, group and not unjoined, None if box_only else dense))
        for _ in range(int(rng.integers(0, 3))):
            label, positive = str(rng.choice(DET_POOL)), bool(rng.random() < 0.6)
            labels.append([image_id, label, int(positive)])
            img.image_labels.append((label, positive))
        preds = []
        for o in img.objects:                                # one good detection per GT label, up the tree
            if o.mask is not None and rng.random() < 0.8:
                for label in hierarchy.expand(o.label):
                    preds.append((label, int(rng.integers(8, 64)) / 64, o.mask))
        for _ in range(int(rng.integers(0, 6))):
            score = int(rng.integers(0, 64)) / 64          # exact in float32 and in 6 significant digits
            if img.objects and rng.random() < 0.6:
                o = img.objects[int(rng.integers(len(img.objects)))]
                base = o.mask if o.mask is not None else random_blob(rng, h, w)
                m = base.copy()
                m[rng.random((h, w)) < 0.05] ^= 1
                preds.append((o.label if rng.random() < 0.8 else str(rng.choice(DET_POOL)), score, m))
            else:
                preds.append((str(rng.choice(DET_POOL)), score, random_blob(rng, h, w)))
        img.detections = preds
        ds.images[image_id] = img
        ds.predictions[image_id] = preds
    _write_csv(ds.path('bbox.csv'), BBOX_COLUMNS, boxes)
    _write_csv(ds.path('masks.csv'), MASKS_COLUMNS, masks)
    _write_csv(ds.path('labels.csv'), LABELS_COLUMNS, labels)
    ds.write_submission()
    return ds


def _write_csv(path, header, rows):
    with open(path, 'w', newline='') as f:
        w = csv.writer(f, lineterminator='\n')
        w.writerow(header)
        w.writerows(rows)
