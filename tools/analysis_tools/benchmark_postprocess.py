"""Time the post-processing chain on a synthetic test shard of real size, and its peak memory.

A shard of ``--images`` images of ``--width`` x ``--height`` with ``--dets`` leaf-model and ``--dets``
parent-model detections each (clusters of overlapping elliptical masks, as an ensemble produces) is split
between ``--workers`` processes, the way ``scripts/postprocess.sh --jobs N`` splits shards. Each worker runs
the whole chain on its part: results -> CSV (leaf and parent), expansion (leaf parents-only and parent),
mask NMS of the two expansions, combine, validation. Each worker first runs the chain on a part 8 times
smaller, so that the growth of its peak memory with the number of images is measured, not assumed.
Mask NMS is also compared with a naive dense-mask NMS (full-size masks, numpy IoU per pair) on a few
images. Lines per step (CPU seconds summed over workers), then the machine-readable last line:

    chain_images_per_s=... peak_rss_mb=...

``chain_images_per_s`` is images through the whole chain per wall-clock second with the workers running
side by side; ``peak_rss_mb`` is the largest worker's high-water mark.

    python tools/analysis_tools/benchmark_postprocess.py [--images 4000] [--dets 120] [--workers 2]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np
from pycocotools import mask as mask_utils

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from util.post.expand import Expander, expand_submission  # noqa: E402
from util.common.hierarchy import load_default  # noqa: E402
from util.post.combine import combine_leaf_and_parent  # noqa: E402
from util.common.mask_codec import encode_binary, encoded_to_coco  # noqa: E402
from util.post.mask_nms import mask_nms_submissions, nms_detections  # noqa: E402
from util.post.results_io import ResultsWriter  # noqa: E402
from util.post.to_submission import results_to_submission  # noqa: E402
from util.common.submission import iter_lockstep  # noqa: E402
from util.post.validate import validate_submission  # noqa: E402


def peak_rss_mb() -> float:
    """The process's high-water mark so far (it only grows)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class MaskPool:
    """Objects (ellipses of log-uniform size) with a few jittered variants each, encoded once as RLE;
    detections reuse them, so synthesis costs seconds while every mask is full size."""

    def __init__(self, rng, n_objects: int, variants: int, width: int, height: int):
        self.variants = []
        yy, xx = np.mgrid[0:height, 0:width]
        for _ in range(n_objects):
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            ay, ax = np.exp(rng.uniform(np.log(6), np.log(height / 2.5), 2))
            group = []
            for v in range(variants):
                jy, jx = (0, 0) if v == 0 else rng.normal(0, 0.06, 2) * (ay, ax)
                sy, sx = (1, 1) if v == 0 else rng.uniform(0.85, 1.15, 2)
                y0, y1 = int(max(cy - ay * 1.3, 0)), int(min(cy + ay * 1.3 + 1, height))
                x0, x1 = int(max(cx - ax * 1.3, 0)), int(min(cx + ax * 1.3 + 1, width))
                m = np.zeros((height, width), np.uint8)
                m[y0:y1, x0:x1] = (((yy[y0:y1, x0:x1] - cy - jy) / (ay * sy)) ** 2 +
                                   ((xx[y0:y1, x0:x1] - cx - jx) / (ax * sx)) ** 2) <= 1
                group.append(encode_binary(m))
            self.variants.append(group)


def synthesise(path, classes, labels_of, rng, pool, n_images, n_dets, width, height, first=0):
    """One results file: per image, ~n_dets/4 objects, each detected several times (jittered masks,
    mostly its own label, sometimes a confusion), as an ensemble's output looks before NMS."""
    n_obj = len(pool.variants)
    with ResultsWriter(path, classes) as w:
        for k in range(n_images):
            objects = rng.choice(n_obj, size=max(1, n_dets // 4), replace=False)
            labels, scores, rles = [], [], []
            while len(labels) < n_dets:
                o = objects[rng.integers(len(objects))]
                own = labels_of[o % len(labels_of)]
                labels.append(own if rng.random() < 0.75 else labels_of[rng.integers(len(labels_of))])
                scores.append(round(float(rng.beta(0.7, 2.0)), 4))
                rles.append(pool.variants[o][rng.integers(len(pool.variants[o]))])
            w.write(f'{first + k:016x}', width, height, labels, scores, rles)


def dense_nms(dets, height, width, thr=0.5):
    """The naive way: decode every mask to a full-size array, IoU of each pair with numpy."""
    keep = []
    for label in dict.fromkeys(d[0] for d in dets):
        idx = sorted((i for i, d in enumerate(dets) if d[0] == label), key=lambda i: -dets[i][1])
        masks = [mask_utils.decode(encoded_to_coco(dets[i][2], height, width)).astype(bool) for i in idx]
        dropped = set()
        for a in range(len(idx)):
            if a in dropped:
                continue
            keep.append(idx[a])
            for b in range(a + 1, len(idx)):
                if b in dropped:
                    continue
                union = np.logical_or(masks[a], masks[b]).sum()
                if union and np.logical_and(masks[a], masks[b]).sum() / union >= thr:
                    dropped.add(b)
    return sorted(keep)


STEPS = ('results->csv', 'expand', 'mask nms', 'combine', 'validate')


def run_chain(p, classes_all) -> dict:
    """scripts/postprocess.sh's steps on one part (files named by ``p``); CPU seconds per step."""
    h = load_default()
    steps = {
        'results->csv': lambda: (results_to_submission(p('leaf.jsonl'), p('leaf.csv')),
                                 results_to_submission(p('parent.jsonl'), p('parent.csv'))),
        'expand': lambda: (expand_submission(p('leaf.csv'), p('leaf_parents.csv'), Expander(h, parents_only=True)),
                           expand_submission(p('parent.csv'), p('parent_expanded.csv'), Expander(h))),
        'mask nms': lambda: mask_nms_submissions([p('leaf_parents.csv'), p('parent_expanded.csv')],
                                                 p('parent_nms.csv')),
        'combine': lambda: combine_leaf_and_parent(p('leaf.csv'), [p('parent_nms.csv')], p('combined.csv')),
        'validate': lambda: validate_submission(p('combined.csv'), classes=classes_all),
    }
    cpu = {}
    for name in STEPS:
        c = time.process_time()
        out = steps[name]()
        cpu[name] = time.process_time() - c
        if name == 'validate':
            assert out.ok, out.problems[:5]
    return cpu


class Part:
    """One worker's files: ``{work}/{name}.{file}``."""

    def __init__(self, work: str, name: str):
        self.work, self.name = work, name

    def __call__(self, file: str) -> str:
        return os.path.join(self.work, f'{self.name}.{file}')


def synthesise_part(args, part: Part, first: int, n_images: int, seed: int) -> None:
    """Leaf and parent results for images ``first .. first + n_images``: the parent model sees the same
    objects under the parents of their leaf labels."""
    rng = np.random.default_rng(seed)
    h = load_default()
    leaf_classes, parent_classes = h.subset('leaf'), h.subset('parent23')
    p23 = set(parent_classes)
    under_parent = [i for i, m in enumerate(leaf_classes) if h.ancestors(m) & p23]
    alone = [i for i, m in enumerate(leaf_classes) if not h.ancestors(m)]
    leaf_labels = [int(i) for i in np.concatenate([rng.choice(under_parent, 24, replace=False),
                                                   rng.choice(alone, 16, replace=False)])]
    parent_labels = [parent_classes.index(next(a for a in h.ancestors_in_order(leaf_classes[i]) if a in p23))
                     if i in under_parent else int(rng.integers(len(parent_classes))) for i in leaf_labels]
    pool = MaskPool(rng, args.objects, 4, args.width, args.height)
    for file, classes, labels in (('leaf.jsonl', leaf_classes, leaf_labels),
                                  ('parent.jsonl', parent_classes, parent_labels)):
        synthesise(part(file), classes, labels, rng, pool, n_images, args.dets, args.width, args.height, first)


def synthesise_job(job) -> None:
    """A worker's part and its probe, 8 times smaller (other images, other seed)."""
    args, index, first, n_images = job
    synthesise_part(args, Part(args.work, f'probe{index}'), first, max(1, n_images // 8), args.seed + 1000 + index)
    synthesise_part(args, Part(args.work, f'part{index}'), first, n_images, args.seed + index)


def chain_job(job) -> dict:
    """The chain on the probe, then on the part; the high-water mark after each (it only grows, so a chain
    whose memory does not depend on the number of images shows the same number twice)."""
    args, index, _, n_images = job
    classes_all = load_default().subset('all')
    start = peak_rss_mb()
    run_chain(Part(args.work, f'probe{index}'), classes_all)
    probe_peak = peak_rss_mb()
    t = time.perf_counter()
    cpu = run_chain(Part(args.work, f'part{index}'), classes_all)
    return dict(cpu=cpu, wall=time.perf_counter() - t, images=n_images, start_rss=start,
                probe_images=max(1, n_images // 8), probe_peak=probe_peak, peak=peak_rss_mb())


def dense_baseline(part: Part, n_images: int) -> None:
    """The RLE mask NMS and the dense-mask NMS on the same few images: same output, time per image."""
    subset = []
    for rows in iter_lockstep([part('leaf_parents.csv'), part('parent_expanded.csv')]):
        subset.append(([d for row in rows for d in row.detections], rows[0].height, rows[0].width))
        if len(subset) == n_images:
            break
    t = time.process_time()
    fast = [nms_detections(dets, hh, ww)[0] for dets, hh, ww in subset]
    t_fast = time.process_time() - t
    t = time.process_time()
    slow = [dense_nms(dets, hh, ww) for dets, hh, ww in subset]
    t_dense = time.process_time() - t
    for (dets, _, _), f, s in zip(subset, fast, slow):
        assert f == [dets[i] for i in s], 'dense baseline and RLE NMS disagree'
    pooled = sum(len(s[0]) for s in subset) / len(subset)
    print(f'mask nms on {len(subset)} images ({pooled:.0f} pooled detections each): RLE '
          f'{t_fast / len(subset) * 1e3:.1f} ms/img, dense {t_dense / len(subset) * 1e3:.0f} ms/img, '
          f'speedup {t_dense / t_fast:.0f}x (peak RSS with dense masks {peak_rss_mb():.0f} MiB)', flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--images', type=int, default=4000, help='images in the shard (split between workers)')
    parser.add_argument('--dets', type=int, default=120, help='detections per image per model')
    parser.add_argument('--workers', type=int, default=2, help='processes running the chain side by side')
    parser.add_argument('--width', type=int, default=1024)
    parser.add_argument('--height', type=int, default=768)
    parser.add_argument('--objects', type=int, default=400, help='distinct objects in the mask pool')
    parser.add_argument('--dense-images', type=int, default=3, help='images for the dense NMS baseline')
    parser.add_argument('--workdir', help='where the files go (default: a temporary directory, removed)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if args.images < args.workers:
        parser.error('--images must be at least --workers')

    args.work = args.workdir or tempfile.mkdtemp(prefix='bench_post_')
    os.makedirs(args.work, exist_ok=True)
    bounds = np.linspace(0, args.images, args.workers + 1).astype(int)
    jobs = [(args, i, int(a), int(b - a)) for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]
    t = time.perf_counter()
    # A fresh pool for the chain: each worker's peak RSS is the chain's own, not the synthesis's (this
    # process, which the workers fork from, holds nothing big).
    with mp.get_context('fork').Pool(args.workers) as pool:
        pool.map(synthesise_job, jobs, chunksize=1)
    synthesis = time.perf_counter() - t
    with mp.get_context('fork').Pool(args.workers) as pool:
        reports = pool.map(chain_job, jobs, chunksize=1)
    wall = max(r['wall'] for r in reports)
    n = args.images
    print(f'{n} images x {args.dets} detections x 2 models at {args.width}x{args.height}, '
          f'{args.workers} workers; synthesis {synthesis:.0f} s, in {args.work}')
    for name in STEPS:
        cpu = sum(r['cpu'][name] for r in reports)
        print(f'{name:>14}: {cpu:7.1f} s CPU  {n / cpu:7.1f} img/s per CPU second', flush=True)
    cpu = sum(sum(r['cpu'].values()) for r in reports)
    print(f'{"chain":>14}: {cpu:7.1f} s CPU  {n / cpu:7.1f} img/s per CPU second; '
          f'{wall:.1f} s wall with {args.workers} workers')
    for i, r in enumerate(reports):
        print(f'worker {i}: peak RSS {r["probe_peak"]:.0f} MiB after a {r["probe_images"]}-image probe, '
              f'{r["peak"]:.0f} MiB after its {r["images"]}-image part (started at {r["start_rss"]:.0f} MiB)')
    dense_baseline(Part(args.work, 'part0'), args.dense_images)
    if not args.workdir:
        shutil.rmtree(args.work)
    print(f'chain_images_per_s={n / wall:.1f} peak_rss_mb={max(r["peak"] for r in reports):.0f}')


if __name__ == '__main__':
    main()
