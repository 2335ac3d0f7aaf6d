"""Speed of the challenge evaluator on a synthetic validation-scale set.

Writes (once, then reuses) a synthetic set in the raw formats: images of long side 1024, ~5 GT masks per
image as PNGs at their own resolution (plus box-only and group-of boxes and image-level labels), and a
Kaggle-format submission with 100 detections per image (near-GT, stray and non-evaluatable ones). Then
times ``util.metric.evaluate.evaluate_files`` - reading the GT files and the submission, decoding, matching, AP -
and prints ``eval_images_per_s=... peak_rss_mb=...`` (parent + workers' peak resident memory) last.

    python tools/analysis_tools/benchmark_eval.py [--images 5000] [--workers 2] [--data-dir DIR]
"""
from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time

import cv2
import numpy as np
from pycocotools import mask as mask_utils

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from util.common.atomic import AtomicWriter  # noqa: E402
from util.common.hierarchy import DEFAULT_CLASSES, DEFAULT_HIERARCHY, Hierarchy  # noqa: E402
from util.common.mask_codec import rle_to_encoded  # noqa: E402
from util.common.oid_files import (  # noqa: E402
    BBOX_COLUMNS,
    LABELS_COLUMNS,
    MASKS_COLUMNS,
    mask_png_name,
    masks_subdir,
)
from util.common.submission import SubmissionWriter  # noqa: E402

LONG_SIDE = 1024
GT_MASKS = 5
BOX_ONLY = 2
DETECTIONS = 100


def ellipse_rle(h: int, w: int, cx: float, cy: float, a: float, b: float) -> dict:
    """Compressed RLE of an axis-parallel filled ellipse, built from column runs (never dense)."""
    xs = np.arange(max(0, int(cx - a)), min(w, int(cx + a) + 1))
    t = 1.0 - ((xs + 0.5 - cx) / a) ** 2
    half = b * np.sqrt(np.clip(t, 0.0, None))
    y0 = np.clip(np.ceil(cy - half - 0.5), 0, h).astype(np.int64)
    y1 = np.clip(np.floor(cy + half - 0.5) + 1, 0, h).astype(np.int64)
    ok = y1 > y0
    starts, ends = xs[ok] * h + y0[ok], xs[ok] * h + y1[ok]
    counts = []
    pos = 0
    for s, e in zip(starts.tolist(), ends.tolist()):
        counts += [s - pos, e - s]
        pos = e
    counts.append(h * w - pos)
    return mask_utils.frPyObjects({'size': [h, w], 'counts': counts}, h, w)


def make_image(args):
    """One image's GT rows, PNGs (``write``) and submission detections (deterministic in its index).
    ``view`` > 0: other detections of the same image (another model's), drawn from their own stream."""
    i, out, leaves, seed, *rest = args
    view, write = rest if rest else (0, True)
    rng = np.random.default_rng([seed, i])
    image_id = f'{i:016x}'
    w, h = (LONG_SIDE, int(rng.integers(600, LONG_SIDE + 1)))
    if rng.random() < 0.5:
        w, h = h, w
    mids = list(rng.choice(leaves, size=3, replace=False))
    boxes, masks_rows = [], []
    mask_dir = os.path.join(out, 'masks', masks_subdir('validation', image_id))
    objects = []
    for k in range(GT_MASKS + BOX_ONLY):
        mid = mids[k % len(mids)]
        a, b = rng.uniform(0.05, 0.25) * w, rng.uniform(0.05, 0.25) * h
        cx, cy = rng.uniform(a, w - a), rng.uniform(b, h - b)
        group = int(rng.random() < 0.1)
        box = (max(0.0, (cx - a) / w), min(1.0, (cx + a) / w), max(0.0, (cy - b) / h), min(1.0, (cy + b) / h))
        boxes.append([image_id, mid, *[f'{v:.6f}' for v in box], group])
        objects.append((mid, cx, cy, a, b))
        if k < GT_MASKS:
            scale = rng.uniform(0.4, 1.2)           # the PNGs are not at the image's resolution
            ph, pw = max(8, int(h * scale)), max(8, int(w * scale))
            name = mask_png_name(image_id, mid, f'{k:08x}')
            if write:
                png = np.zeros((ph, pw), np.uint8)
                cv2.ellipse(png, (int(cx * scale), int(cy * scale)),
                            (max(1, int(a * scale)), max(1, int(b * scale))), 0, 0, 360, 255, -1)
                cv2.imwrite(os.path.join(mask_dir, name), png)
            masks_rows.append([name, image_id, mid, f'{k:08x}', *[f'{v:.6f}' for v in box], '0.8', ''])
    dets = _detections(rng if view == 0 else np.random.default_rng([seed, i, view]), objects, mids, leaves, w, h)
    labels = [[image_id, m, 1] for m in mids] + [[image_id, str(rng.choice(leaves)), 0]]
    return image_id, w, h, boxes, masks_rows, labels, dets


def _detections(rng, objects, mids, leaves, w, h) -> list:
    """DETECTIONS ellipses: two jittered copies of every GT object, the rest stray."""
    dets = []
    for d in range(DETECTIONS):
        if d < 2 * len(objects):                     # near a GT object, jittered
            mid, cx, cy, a, b = objects[d % len(objects)]
            j = rng.uniform(0.85, 1.15, 4)
            cx, cy, a, b = cx * j[0] ** 0.2, cy * j[1] ** 0.2, a * j[2], b * j[3]
        else:                                        # stray: an image label or any leaf
            mid = mids[d % 3] if rng.random() < 0.6 else str(rng.choice(leaves))
            a, b = rng.uniform(0.02, 0.3) * w, rng.uniform(0.02, 0.3) * h
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rle = ellipse_rle(h, w, cx, cy, max(a, 1.0), max(b, 1.0))
        dets.append((mid, round(float(rng.random()), 4), rle_to_encoded(rle)))
    return dets


def generate(out: str, images: int, workers: int, seed: int = 0) -> None:
    hierarchy = Hierarchy.from_json(DEFAULT_HIERARCHY)
    leaves = hierarchy.leaves
    for c in '0123456789abcdef':
        os.makedirs(os.path.join(out, 'masks', masks_subdir('validation', c)), exist_ok=True)
    with mp.get_context('fork').Pool(workers) as pool, \
            AtomicWriter(os.path.join(out, 'bbox.csv')) as fb, AtomicWriter(os.path.join(out, 'masks.csv')) as fm, \
            AtomicWriter(os.path.join(out, 'labels.csv')) as fl, SubmissionWriter(os.path.join(out, 'sub.csv')) as sub:
        wb, wm, wl = (csv.writer(f, lineterminator='\n') for f in (fb, fm, fl))
        wb.writerow(BBOX_COLUMNS)
        wm.writerow(MASKS_COLUMNS)
        wl.writerow(LABELS_COLUMNS)
        tasks = ((i, out, leaves, seed) for i in range(images))
        for image_id, w, h, boxes, masks_rows, labels, dets in pool.imap(make_image, tasks, chunksize=16):
            wb.writerows(boxes)
            wm.writerows(masks_rows)
            wl.writerows(labels)
            sub.write(image_id, w, h, dets)
    open(os.path.join(out, f'.complete-{images}'), 'w').close()


def ensure_dataset(images: int, workers: int, data_dir: str | None = None) -> str:
    """The synthetic set of ``images`` images (made once; by default in the system's temporary folder)."""
    out = data_dir or os.path.join(tempfile.gettempdir(), f'oid-eval-bench-{images}')
    if not os.path.exists(os.path.join(out, f'.complete-{images}')):
        t = time.perf_counter()
        generate(out, images, workers)
        print(f'generated {images} images in {out} in {time.perf_counter() - t:.0f} s')
    return out


def ensure_view(out: str, images: int, workers: int, view: int, seed: int = 0) -> str:
    """``sub-view{view}.csv`` beside the set's ``sub.csv``: the same images predicted by another model."""
    path = os.path.join(out, f'sub-view{view}.csv')
    if not os.path.exists(path):
        leaves = Hierarchy.from_json(DEFAULT_HIERARCHY).leaves
        with mp.get_context('fork').Pool(workers) as pool, SubmissionWriter(path) as sub:
            tasks = ((i, out, leaves, seed, view, False) for i in range(images))
            for image_id, w, h, _, _, _, dets in pool.imap(make_image, tasks, chunksize=16):
                sub.write(image_id, w, h, dets)
    return path


def _cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (the pool's workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def peak_rss_mb(workers: int) -> float:
    """Parent's peak plus ``workers`` times the largest worker's peak (an upper bound of the total)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + workers * child) / 1024.0


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--images', type=int, default=5000)
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--data-dir', help='where the synthetic set lives (default: oid-eval-bench-N in the '
                                      "system's temporary folder)")
    a = p.parse_args(argv)
    out = ensure_dataset(a.images, a.workers, a.data_dir)

    from util.metric.evaluate import evaluate_files
    load = os.getloadavg()[0]
    cpu = _cpu_seconds()
    t = time.perf_counter()
    result = evaluate_files(os.path.join(out, 'masks.csv'), os.path.join(out, 'masks'), os.path.join(out, 'bbox.csv'),
                            os.path.join(out, 'labels.csv'), DEFAULT_HIERARCHY, DEFAULT_CLASSES,
                            os.path.join(out, 'sub.csv'), workers=a.workers)
    elapsed = time.perf_counter() - t
    cpu = _cpu_seconds() - cpu
    print(f'mAP@0.5IOU={result.mean_ap:.10f} ({result.images_evaluated} images, {elapsed:.1f} s, '
          f'{a.workers} workers)')
    print(f'cpu_ms_per_image={1000 * cpu / a.images:.1f} (parent + workers; {a.images * a.workers / cpu:.1f} images/s '
          f'if {a.workers} cores were free; load average {load:.1f} at the start on {os.cpu_count()} cores)')
    print(f'eval_images_per_s={a.images / elapsed:.1f} peak_rss_mb={peak_rss_mb(a.workers):.0f}')


if __name__ == '__main__':
    main()
