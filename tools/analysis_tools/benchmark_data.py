"""Benchmark of data preparation: mask conversion speed, annotation loading, rebalancing at train scale.

1. Conversion: a synthetic download with real-size images (long side 1024, masks at another resolution)
   goes through util.data.build with 1 and with 2 workers -> masks/s.
   Targets: >= 150 masks/s per worker; 2 workers >= 1.7x one.
2. Loading: an annotation file of full train scale (850k images, 2.1M masks with real-size RLEs and the
   real class frequencies), written directly in the annotation format, is loaded by load_annotations in
   a fresh subprocess, which reports its time and peak RSS. Targets: <= 30 s, <= 6 GB.
3. Rebalancing: the leaf preset, 7 rounds, on that data_list in the same subprocess. Target: <= 60 s.

The last line is ``conversion_masks_per_s=... load_s=... load_peak_rss_mb=... rebalance_s=...``.
``--scale 0.01`` runs the loading and rebalancing parts at 1% of train scale.

    python tools/analysis_tools/benchmark_data.py [--scale 1.0] [--conversion-images 300]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
from pycocotools import mask as mask_utils

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from util.common.hierarchy import load_default, read_mask_counts  # noqa: E402
from util.data.annotations import make_metainfo, save_annotations  # noqa: E402
from util.data.build import build, make_source  # noqa: E402
from util.data.synthetic import generate  # noqa: E402

TRAIN_IMAGES, TRAIN_MASKS = 850_000, 2_125_530
IMAGE_SIZES = ((1024, 768), (768, 1024), (1024, 683), (683, 1024), (1024, 1024), (1024, 576), (1024, 680))


def bench_conversion(work: str, n_images: int, seed: int = 0) -> dict:
    """masks/s of build_annotations over real-size synthetic data, with 1 and 2 workers."""
    data = os.path.join(work, 'real_size')
    generate(data, seed=seed, train=n_images, val=0, test=0, long_side=(1024, 1024), progress=False)
    src = make_source(os.path.join(data, 'challenge-2019-train-segmentation-masks.csv'))
    out = {}
    for workers in (1, 2):
        cpu0 = _cpu_seconds()
        t = time.perf_counter()
        *_, problems, _, done = build([src], 'leaf', workers=workers, progress=False)
        dt = time.perf_counter() - t
        cpu = _cpu_seconds() - cpu0
        assert not problems, problems[:3]
        out[workers] = done / dt
        # masks per CPU-second tells whether a slow 2-worker run lacked free cores or did extra work
        print(f'conversion, {workers} worker(s): {done} masks in {dt:.2f} s = {done / dt:.0f} masks/s '
              f'({done / cpu:.0f} masks per CPU-second, load average {os.getloadavg()[0]:.1f})', flush=True)
    return out


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the pool's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def rle_pool(rng, per_size: int = 200) -> dict:
    """Compressed RLE strings of random ellipses and polygons, per image size (real-size masks)."""
    pool = {}
    for w, h in IMAGE_SIZES:
        strings = []
        for _ in range(per_size):
            m = np.zeros((h, w), np.uint8)
            bw = int(np.exp(rng.uniform(np.log(12), np.log(0.95 * w))))
            bh = int(np.clip(bw * np.exp(rng.normal(0, 0.5)), 8, 0.95 * h))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            if rng.random() < 0.5:
                cv2.ellipse(m, (x + bw // 2, y + bh // 2), (bw // 2, bh // 2), 0, 0, 360, 1, -1)
            else:
                pts = np.stack([rng.integers(x, x + bw, 7), rng.integers(y, y + bh, 7)], 1).astype(np.int32)
                cv2.fillPoly(m, [cv2.convexHull(pts)], 1)
            strings.append(mask_utils.encode(np.asfortranarray(m))['counts'].decode('ascii'))
        pool[(w, h)] = strings
    return pool


def synthesize_annotations(path: str, n_images: int, n_masks: int, seed: int = 0) -> float:
    """Write a leaf annotation file of the given scale; return the mean RLE length in characters."""
    rng = np.random.default_rng(seed)
    h = load_default()
    metainfo = make_metainfo(h, 'leaf')
    counts = read_mask_counts()
    p = np.array([counts[m] for m in metainfo['mids']], np.float64)
    labels = rng.choice(len(p), n_masks, p=p / p.sum())
    per_image = np.ones(n_images, np.int64) + np.bincount(rng.integers(0, n_images, n_masks - n_images),
                                                          minlength=n_images)
    sizes = rng.integers(0, len(IMAGE_SIZES), n_images)
    per_size = max(10, min(200, n_masks // 100))
    picks = rng.integers(0, per_size, n_masks)
    boxes = rng.uniform(0, 500, (n_masks, 2))
    pool = rle_pool(rng, per_size)
    data_list, k, chars = [], 0, 0
    for i in range(n_images):
        w, hgt = IMAGE_SIZES[sizes[i]]
        strings = pool[(w, hgt)]
        instances = []
        for _ in range(per_image[i]):
            s = strings[picks[k]]
            counts_str = s[:-1] + s[-1]      # a distinct object per mask, as a real file would load
            chars += len(s)
            x, y = float(boxes[k, 0]), float(boxes[k, 1])
            instances.append({'bbox': [x, y, x + 100.0, y + 80.0], 'bbox_label': int(labels[k]),
                              'mask': {'size': [hgt, w], 'counts': counts_str}, 'ignore_flag': 0})
            k += 1
        data_list.append({'img_id': f'{i:016x}', 'img_path': f'{i:016x}.jpg', 'width': w, 'height': hgt,
                          'instances': instances})
    save_annotations(path, metainfo, data_list)
    return chars / n_masks


CHILD = r'''
import json, resource, sys, time
sys.path.insert(0, sys.argv[2])
from util.data.annotations import load_annotations
from util.data.rebalance import class_images, parse_bands, rebalance
t = time.perf_counter()
ann = load_annotations(sys.argv[1])
load_s = time.perf_counter() - t
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
data_list = ann['data_list']
index = rebalance(class_images(data_list, len(ann['metainfo']['classes'])), len(data_list),
                  parse_bands('leaf'), rounds=7, seed=0)
rebalance_s = time.perf_counter() - t
print(json.dumps({'load_s': load_s, 'load_peak_rss_mb': rss_mb, 'rebalance_s': rebalance_s,
                  'images': len(data_list), 'index_len': int(len(index))}))
'''


def bench_load_and_rebalance(path: str) -> dict:
    """Load + rebalance in a fresh interpreter; its own peak RSS is read right after loading."""
    r = subprocess.run([sys.executable, '-c', CHILD, path, ROOT], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f'load subprocess failed: {r.stderr.strip()}')
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--scale', type=float, default=1.0, help='fraction of train scale for load/rebalance')
    p.add_argument('--conversion-images', type=int, default=300, help='real-size images for conversion')
    p.add_argument('--work-dir', default=None, help='scratch folder (default: a temporary one, removed)')
    p.add_argument('--skip-load', action='store_true', help='conversion only (no train-scale file)')
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=a.work_dir) as work:
        conv = bench_conversion(work, a.conversion_images)
        print(f'conversion 2 workers / 1 worker = {conv[2] / conv[1]:.2f}x', flush=True)
        if a.skip_load:
            return
        n_img, n_masks = max(1, int(TRAIN_IMAGES * a.scale)), max(1, int(TRAIN_MASKS * a.scale))
        n_masks = max(n_masks, n_img)
        path = os.path.join(work, 'train_scale.pkl')
        t = time.perf_counter()
        mean_len = synthesize_annotations(path, n_img, n_masks)
        print(f'synthesized {n_img} images, {n_masks} masks (mean RLE {mean_len:.0f} chars) in '
              f'{time.perf_counter() - t:.0f} s; file {os.path.getsize(path) / 2 ** 20:.0f} MB', flush=True)
        res = bench_load_and_rebalance(path)
    print(f'load: {res["images"]} images in {res["load_s"]:.1f} s, peak RSS {res["load_peak_rss_mb"]:.0f} MB; '
          f'rebalance (leaf, 7 rounds): {res["index_len"]} entries in {res["rebalance_s"]:.1f} s')
    print(f'conversion_masks_per_s={conv[1]:.0f} load_s={res["load_s"]:.1f} '
          f'load_peak_rss_mb={res["load_peak_rss_mb"]:.0f} rebalance_s={res["rebalance_s"]:.1f}')


if __name__ == '__main__':
    main()
