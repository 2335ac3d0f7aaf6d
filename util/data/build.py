"""Masks CSV(s) + mask PNGs + images -> annotation file(s) the mmdet dataset reads (util.data.annotations).

Per mask row: the PNG (whose resolution is not the image's) is resized nearest-neighbour to the image size
read from the JPEG header, and stored as COCO compressed RLE with ``counts`` as str. The box comes from
the CSV (normalised -> pixels, clipped to the image), as in the reference; ``--box-source mask`` takes
the tight box of the resized mask instead. Labels are restricted to a class subset; for the parent
subsets every mask is also emitted once per ancestor in the subset (Teddy bear -> Toy and Bear in
``parent``, plus Carnivore in ``parent25``). Rows it cannot use (unknown label, degenerate box, missing
image or PNG, empty mask) are counted and reported; ``--strict`` makes the first one fatal (file:line)
and decodes every image fully (a JPEG cut short keeps its header, which is all the default reads). A
damaged CSV (not UTF-8, a truncated row, a missing column) is always fatal, named by file:line. The
file names, columns and folders of the download are ``util.common.oid_files``'.

Several CSVs may be merged (train + validation), each with its own masks and images folders; by default
they are found beside the CSV: ``challenge-2019-{split}-segmentation-masks.csv`` -> ``{split}/`` images
and ``{split}-masks-{0..f}/`` (or one flat folder) of PNGs. A held-out part (``--val-count`` /
``--val-fraction``) is chosen by a seeded hash of the image id: the same images for the same seed,
whatever the order or number of input rows.

    python -m util.data.build --masks-csv D/challenge-2019-train-segmentation-masks.csv \\
        --masks-csv D/challenge-2019-validation-segmentation-masks.csv --subset leaf \\
        --out ann/leaf_train.pkl --val-out ann/leaf_val.pkl --val-count 5000 --holdout-from validation
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import multiprocessing as mp
import os
import sys
from collections import Counter
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
from pycocotools import mask as mask_utils

from ..common.cli import add_progress_flag, run
from ..common.cli import progress as cli_progress
from ..common.errors import DataError
from ..common.hierarchy import (
    DEFAULT_CLASSES,
    DEFAULT_HIERARCHY,
    SUBSET_HELP,
    SUBSETS,
    Hierarchy,
    subset_arg,
)
from ..common.image_io import decoded_image_size, find_image, image_size, read_mask
from ..common.mask_codec import resize_nearest
from ..common.oid_files import MASKS_NEEDED, iter_rows, masks_subdir, split_of_masks_csv
from ..common.workers import start_worker
from .annotations import make_metainfo, save_annotations
from .federated import read_federated

PARENT_SUBSETS = ('parent', 'parent23', 'parent25')


@dataclass
class Source:
    """One masks CSV and the folders its rows point into."""
    csv: str
    masks_dir: str
    images_dir: str
    split: str
    flat_masks: bool = False   # PNGs directly in masks_dir rather than in {split}-masks-{c}/

    def mask_path(self, image_id: str, name: str) -> str:
        if self.flat_masks:
            return f'{self.masks_dir}{os.sep}{name}'
        return f'{self.masks_dir}{os.sep}{masks_subdir(self.split, image_id)}{os.sep}{name}'


@dataclass
class Problem:
    """A row that could not be used: where, why (a short category) and the particulars."""
    csv: str
    line: int
    image_id: str
    reason: str
    detail: str = ''

    def __str__(self) -> str:
        return f'{self.csv}:{self.line}: image {self.image_id}: {self.reason}{self.detail}'


def make_source(csv_path: str, masks_dir: str | None = None, images_dir: str | None = None) -> Source:
    if not os.path.isfile(csv_path):
        raise DataError(f'{csv_path}: masks CSV not found')
    split = split_of_masks_csv(csv_path)
    root = os.path.dirname(os.path.abspath(csv_path))
    masks_dir = masks_dir or root
    images_dir = images_dir or os.path.join(root, split)
    for d, what in ((masks_dir, 'masks'), (images_dir, 'images')):
        if not os.path.isdir(d):
            raise DataError(f'{d}: {what} folder of {csv_path} not found')
    nested = any(n.startswith(masks_subdir(split, '')) for n in os.listdir(masks_dir))
    return Source(csv_path, masks_dir, images_dir, split, flat_masks=not nested)


def label_map(hierarchy: Hierarchy, subset: str, expand: bool) -> dict[str, tuple[int, ...]]:
    """MID -> label indices it is emitted as (empty: a known label outside the subset)."""
    mids = hierarchy.subset(subset)
    index = {m: i for i, m in enumerate(mids)}
    out = {}
    for mid in hierarchy.order:
        labels = hierarchy.expand(mid) if expand else [mid]
        out[mid] = tuple(index[m] for m in labels if m in index)
    return out


def read_rows(src: Source, labels: dict[str, tuple[int, ...]]):
    """Read one masks CSV -> (usable rows as a DataFrame, problems, rows outside the subset)."""
    lines, values = [], []
    for line, row in iter_rows(src.csv, MASKS_NEEDED):     # strict: a damaged file is fatal here
        lines.append(line)
        values.append(row)
    df = pd.DataFrame(values, columns=list(MASKS_NEEDED), dtype=str)
    df['line'] = np.asarray(lines, dtype=np.int64)
    df['labels'] = df['LabelName'].map(labels)
    box = df[['BoxXMin', 'BoxXMax', 'BoxYMin', 'BoxYMax']].apply(pd.to_numeric, errors='coerce').astype(np.float64)
    x1, x2, y1, y2 = (box[c].to_numpy(np.float64) for c in box.columns)
    unknown = df['labels'].isna().to_numpy()
    bad_box = ~(np.isfinite(box.to_numpy()).all(axis=1) & (x1 >= -1e-3) & (y1 >= -1e-3)
                & (x2 <= 1 + 1e-3) & (y2 <= 1 + 1e-3) & (x2 > x1) & (y2 > y1))
    bad_id = (df['ImageID'] == '').to_numpy() | (df['MaskPath'] == '').to_numpy()
    problems = []
    for reason, sel in (('unknown label', unknown), ('degenerate box', bad_box & ~unknown),
                        ('empty ImageID or MaskPath', bad_id & ~unknown & ~bad_box)):
        for i in np.flatnonzero(sel):
            detail = f' {df["LabelName"].iat[i]!r}' if reason == 'unknown label' else ''
            problems.append(Problem(src.csv, int(df['line'].iat[i]), df['ImageID'].iat[i], reason, detail))
    ok = ~(unknown | bad_box | bad_id)
    df = df[ok]
    outside = df['labels'].map(len).to_numpy() == 0
    df = df[~outside]
    df = df.assign(x1=box['BoxXMin'][df.index], x2=box['BoxXMax'][df.index],
                   y1=box['BoxYMin'][df.index], y2=box['BoxYMax'][df.index])
    return df, problems, int(outside.sum())


def make_tasks(src: Source, df: pd.DataFrame, img_root: str):
    """One task per image: everything a worker needs, as plain tuples (cheap to send)."""
    df = df.sort_values(['ImageID', 'line'], kind='stable')
    ids = df['ImageID'].to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(ids)]
    names, lines, labels = df['MaskPath'].to_numpy(), df['line'].to_numpy(), df['labels'].to_numpy()
    boxes = df[['x1', 'y1', 'x2', 'y2']].to_numpy(np.float64).tolist()   # Python floats pickle small
    rel_dir = os.path.relpath(src.images_dir, img_root)
    rel_prefix = '' if rel_dir == '.' else rel_dir + os.sep
    tasks = []
    for s, e in zip(starts, ends):
        image_id = ids[s]
        rows = [(src.mask_path(image_id, names[k]), int(lines[k]), labels[k], boxes[k])
                for k in range(s, e)]
        tasks.append((src.csv, image_id, src.images_dir, rel_prefix, rows))
    return tasks


def encode_resized(path: str, height: int, width: int):
    """Mask PNG -> RLE of the mask resized (nearest) to height x width (DataError if unreadable).

    The PNG is transposed before resizing, so the resized array is already in the column-major order
    pycocotools encodes: no full-size copy is made.
    """
    t = cv2.transpose(read_mask(path))
    t = resize_nearest(t, width, height)   # the evaluator's resize too (util.common.mask_codec), not cv2's
    return mask_utils.encode(np.asfortranarray(t.T))   # t.T is H x W; Fortran order without a copy


_BOX_SOURCE = 'csv'
_MIN_BOX = 1.0
_DECODE = False             # --strict: decode every image fully, not only its header


def _init_worker(box_source: str, min_box: float, decode: bool = False) -> None:
    global _BOX_SOURCE, _MIN_BOX, _DECODE
    _BOX_SOURCE, _MIN_BOX, _DECODE = box_source, min_box, decode


def convert_image(task):
    """One image's rows -> (data_list item or None, problems, masks converted)."""
    csv_path, image_id, images_dir, rel_prefix, rows = task
    try:
        img = find_image(images_dir, image_id)
    except DataError:
        img = os.path.join(images_dir, f'{image_id}.jpg')
        return None, [Problem(csv_path, line, image_id, 'missing image', f' {img}') for _, line, _, _ in rows], 0
    try:
        width, height = (decoded_image_size if _DECODE else image_size)(img)
    except DataError as e:
        return None, [Problem(csv_path, line, image_id, 'unreadable image', f': {e}') for _, line, _, _ in rows], 0
    img_rel = rel_prefix + os.path.basename(img)
    problems, instances, done = [], [], 0
    for path, line, labels, (nx1, ny1, nx2, ny2) in rows:
        try:
            rle = encode_resized(path, height, width)
        except DataError as e:
            missing = not os.path.exists(path)
            problems.append(Problem(csv_path, line, image_id, 'missing mask PNG' if missing else 'unreadable mask PNG',
                                    f' {path}' if missing else f': {e}'))
            continue
        if mask_utils.area(rle) == 0:
            problems.append(Problem(csv_path, line, image_id, 'empty mask'))
            continue
        if _BOX_SOURCE == 'mask':
            x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
            box = [x, y, x + w, y + h]
        else:
            box = [min(max(nx1 * width, 0.0), width), min(max(ny1 * height, 0.0), height),
                   min(max(nx2 * width, 0.0), width), min(max(ny2 * height, 0.0), height)]
        if box[2] - box[0] < _MIN_BOX or box[3] - box[1] < _MIN_BOX:
            problems.append(Problem(csv_path, line, image_id, 'degenerate box', f' (under {_MIN_BOX:g} px)'))
            continue
        counts = rle['counts'].decode('ascii')
        done += 1
        for label in labels:
            instances.append({'bbox': list(box), 'bbox_label': int(label),
                              'mask': {'size': [height, width], 'counts': counts}, 'ignore_flag': 0})
    if not instances:
        return None, problems, done
    item = {'img_id': image_id, 'img_path': img_rel, 'width': int(width), 'height': int(height),
            'instances': instances}
    return item, problems, done


def holdout_ids(image_ids, count: int, seed: int) -> set[str]:
    """The ``count`` ids with the smallest seeded hash: stable under reordering and row filtering."""
    key = [(hashlib.blake2b(f'{seed}:{i}'.encode(), digest_size=8).digest(), i) for i in set(image_ids)]
    key.sort()
    return {i for _, i in key[:count]}


def convert(tasks, *, workers: int = 1, box_source: str = 'csv', min_box: float = 1.0, strict: bool = False,
            progress: bool = True):
    """Run ``convert_image`` over the tasks (in order) -> (items, problems, masks converted).
    ``strict``: the first problem is fatal, and images are decoded fully."""
    items, problems, done = [], [], 0
    bar = cli_progress(total=len(tasks), enabled=progress, unit='img', desc='masks -> RLE')

    def consume(results):
        nonlocal done
        for item, probs, n in results:
            bar.update(1)
            done += n
            if probs and strict:
                raise DataError(str(probs[0]))
            problems.extend(probs)
            if item is not None:
                items.append(item)

    try:
        if workers <= 1:
            _init_worker(box_source, min_box, strict)
            consume(map(convert_image, tasks))
        else:
            # Forked workers inherit the parent's millions of task objects; freezing them keeps the
            # workers' garbage collector off those pages (no copy-on-write of the whole heap).
            gc.freeze()
            try:
                chunk = max(1, min(64, len(tasks) // (workers * 16) or 1))
                with mp.get_context('fork').Pool(workers, start_worker,
                                                 (os.getpid(), _init_worker, (box_source, min_box, strict))) as pool:
                    consume(pool.imap(convert_image, tasks, chunksize=chunk))
            finally:
                gc.unfreeze()
    finally:
        bar.close()
    return items, problems, done


def report(problems, outside: int, out=sys.stderr, shown: int = 5) -> None:
    """Counts of unusable rows by reason, with the first few as examples."""
    if outside:
        print(f'{outside} rows skipped: label outside the class subset', file=out)
    if not problems:
        return
    by_reason = Counter(p.reason for p in problems)
    print(f'{len(problems)} rows could not be used:', file=out)
    for reason, n in by_reason.most_common():
        print(f'  {n:>8}  {reason}', file=out)
    for p in problems[:shown]:
        print(f'  e.g. {p}', file=out)


def build(sources, subset='leaf', *, expand=None, img_root=None, val_count=0, val_fraction=0.0,
          holdout_from=None, seed=0, workers=1, box_source='csv', min_box=1.0, strict=False,
          hierarchy=None, progress=True, bbox_csvs=(), labels_csvs=()):
    """Convert -> (metainfo, train items, held-out items, problems, rows outside subset, masks done).

    Only the sources and the subset are positional: the rest are keyword-only (there are many).
    ``bbox_csvs`` / ``labels_csvs``: the federated fields (``util.data.federated``): verified classes and
    box-only ignore instances per image.
    """
    hierarchy = hierarchy or Hierarchy.from_json(DEFAULT_HIERARCHY, DEFAULT_CLASSES)
    if expand is None:   # a class-list file holding a parent label gets its descendants' masks too
        expand = subset in PARENT_SUBSETS or (subset not in SUBSETS
                                              and any(hierarchy.children[m] for m in hierarchy.subset(subset)))
    labels = label_map(hierarchy, subset, expand)
    if img_root is None:
        dirs = {os.path.abspath(s.images_dir) for s in sources}
        img_root = dirs.pop() if len(dirs) == 1 else os.path.commonpath(sorted(dirs))
    tasks, problems, outside, mask_boxes = [], [], 0, []
    for src in sources:
        df, probs, n_out = read_rows(src, labels)
        if probs and strict:
            raise DataError(str(min(probs, key=lambda p: p.line)))
        problems += probs
        outside += n_out
        tasks += make_tasks(src, df, img_root)
        mask_boxes.append(df[['ImageID', 'LabelName', 'x1', 'y1', 'x2', 'y2']])
    pool_ids = [t[1] for t in tasks if holdout_from is None or split_of_masks_csv(t[0]) in holdout_from]
    n_val = val_count or int(round(val_fraction * len(set(pool_ids))))
    if n_val > len(set(pool_ids)):
        raise DataError(f'asked to hold out {n_val} images but only {len(set(pool_ids))} are eligible')
    held = holdout_ids(pool_ids, n_val, seed) if n_val else set()
    items, probs, done = convert(tasks, workers=workers, box_source=box_source, min_box=min_box, strict=strict,
                                 progress=progress)
    problems += probs
    if bbox_csvs or labels_csvs:
        boxes = pd.concat(mask_boxes, ignore_index=True) if mask_boxes else pd.DataFrame(
            columns=['ImageID', 'LabelName', 'x1', 'y1', 'x2', 'y2'])
        read_federated(bbox_csvs, labels_csvs, boxes, hierarchy, hierarchy.subset(subset), expand).attach(items)
    train = [it for it in items if it['img_id'] not in held]
    val = [it for it in items if it['img_id'] in held]
    return make_metainfo(hierarchy, subset), train, val, problems, outside, done


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='python -m util.data.build', description=__doc__.split('\n\n')[0])
    p.add_argument('--masks-csv', action='append', required=True,
                   help='a challenge-2019-{split}-segmentation-masks.csv (repeat to merge splits)')
    p.add_argument('--masks-dir', action='append', default=[],
                   help='folder holding {split}-masks-{0..f}/ (or the PNGs); once, or once per CSV '
                        '(default: the CSV\'s folder)')
    p.add_argument('--images-dir', action='append', default=[],
                   help='folder of {ImageID}.jpg; once, or once per CSV (default: {split}/ beside the CSV)')
    p.add_argument('--img-root', default=None,
                   help='img_path is written relative to this (default: the images folder, or the common '
                        'parent of several)')
    p.add_argument('--subset', default='leaf', type=subset_arg, help=SUBSET_HELP)
    p.add_argument('--no-expand', action='store_true',
                   help='parent subsets (or a class list with parents): do not add ancestor copies')
    p.add_argument('--out', required=True, help='annotation file (.pkl fast, .json readable)')
    p.add_argument('--val-out', default=None, help='annotation file for the held-out images')
    g = p.add_mutually_exclusive_group()
    g.add_argument('--val-count', type=int, default=0, help='hold out this many images')
    g.add_argument('--val-fraction', type=float, default=0.0, help='hold out this fraction of images')
    p.add_argument('--holdout-from', action='append', default=None, metavar='SPLIT',
                   help='draw the held-out images only from these splits (e.g. validation); default all')
    p.add_argument('--seed', type=int, default=0, help='seed of the held-out choice')
    p.add_argument('--workers', type=int, default=1)
    p.add_argument('--box-source', choices=('csv', 'mask'), default='csv',
                   help='boxes from the CSV (default, as the reference) or the tight box of the mask')
    p.add_argument('--min-box-size', type=float, default=1.0, help='boxes thinner than this (px) are unusable')
    p.add_argument('--strict', action='store_true',
                   help='stop at the first unusable row (file:line); decode every image fully')
    p.add_argument('--bbox-csv', action='append', default=[],
                   help='federated fields: a challenge-2019-{split}-segmentation-bbox.csv; its boxes without a mask '
                        'become ignore instances (ignore_flag 1, no mask); repeat per split')
    p.add_argument('--labels-csv', action='append', default=[],
                   help='federated fields: a challenge-2019-{split}-segmentation-labels.csv (or -imagelabels.csv): '
                        'per image the classes verified present / absent, expanded as the metric does')
    add_progress_flag(p)
    return p.parse_args(argv)


def _per_source(values, n, flag):
    if len(values) not in (0, 1, n):
        raise DataError(f'{flag}: give it once, or once per --masks-csv ({n})')
    return values * n if len(values) == 1 else (values or [None] * n)


def main(argv=None) -> None:
    a = parse_args(argv)
    n = len(a.masks_csv)
    if (a.val_count or a.val_fraction) and not a.val_out:
        raise DataError('--val-count/--val-fraction need --val-out')
    if not 0 <= a.val_fraction < 1 or a.val_count < 0:
        raise DataError('--val-fraction must be in [0, 1) and --val-count >= 0')
    masks_dirs = _per_source(a.masks_dir, n, '--masks-dir')
    images_dirs = _per_source(a.images_dir, n, '--images-dir')
    sources = [make_source(c, m, i) for c, m, i in zip(a.masks_csv, masks_dirs, images_dirs)]
    if a.holdout_from:
        unknown = set(a.holdout_from) - {s.split for s in sources}
        if unknown:
            raise DataError(f'--holdout-from: no masks CSV of split {", ".join(sorted(unknown))}')
    metainfo, train, val, problems, outside, done = build(
        sources, a.subset, expand=False if a.no_expand else None, img_root=a.img_root, val_count=a.val_count,
        val_fraction=a.val_fraction, holdout_from=a.holdout_from, seed=a.seed, workers=a.workers,
        box_source=a.box_source, min_box=a.min_box_size, strict=a.strict, progress=a.progress,
        bbox_csvs=a.bbox_csv, labels_csvs=a.labels_csv)
    save_annotations(a.out, metainfo, train)
    msg = f'{a.out}: {len(train)} images, {sum(len(i["instances"]) for i in train)} instances'
    if a.val_out:
        save_annotations(a.val_out, metainfo, val)
        msg += f'; {a.val_out}: {len(val)} images, {sum(len(i["instances"]) for i in val)} instances'
    print(f'{msg} ({done} masks converted, subset {a.subset}: {len(metainfo["classes"])} classes)')
    report(problems, outside)


if __name__ == '__main__':
    raise SystemExit(run(main))
