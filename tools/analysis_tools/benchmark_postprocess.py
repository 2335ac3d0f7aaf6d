"""Time the post-processing steps on synthetic results of real size, and their peak memory.

Synthesises a leaf-model and a parent-model results file (``--images`` images of ``--width`` x
``--height`` with ``--dets`` detections each: clusters of overlapping elliptical masks, as an ensemble
produces), then times each step the way scripts/postprocess.sh runs it: results -> CSV (both files),
expansion (leaf parents-only and parent), mask NMS of the two expansions, combine, validation. Mask NMS is
also compared with a naive dense-mask NMS (full-size masks, numpy IoU per pair) on the first
``--dense-images`` images, both timed on that same subset. The last line is machine-readable:

    results_to_csv_img_per_s=... expand_img_per_s=... mask_nms_img_per_s=... validate_img_per_s=...
    nms_speedup_vs_dense=... peak_rss_mb=...

``img_per_s`` counts images of one file through one step per CPU second (wall time is printed too);
``peak_rss_mb`` is the process's high-water mark before the dense baseline runs (the baseline itself
needs full-size masks and is reported apart).

    python tools/analysis_tools/benchmark_postprocess.py [--images 1000] [--dets 150] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np
from pycocotools import mask as mask_utils

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from util.expand import Expander, expand_submission  # noqa: E402
from util.hierarchy import load_default  # noqa: E402
from util.integrate import combine_leaf_and_parent  # noqa: E402
from util.mask_codec import encode_binary, encoded_to_coco  # noqa: E402
from util.mask_nms import mask_nms_submissions, nms_detections  # noqa: E402
from util.results_io import ResultsWriter  # noqa: E402
from util.results_to_submission import results_to_submission  # noqa: E402
from util.submission import iter_lockstep  # noqa: E402
from util.validate_submission import validate_submission  # noqa: E402


def rss_mb() -> float:
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


def synthesise(path, classes, labels_of, rng, pool, n_images, n_dets, width, height):
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
            w.write(f'{k:016x}', width, height, labels, scores, rles)


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


def timed(label, fn, n_images, results):
    """Run one step; rates are per CPU second (the steps are single-threaded, so on an idle machine
    that is the wall-clock rate, and on a shared one it does not depend on the neighbours)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    dt, dc = time.perf_counter() - t, time.process_time() - c
    results[label] = n_images / dc
    what = '; '.join(map(str, out)) if isinstance(out, tuple) else \
        out.summary().replace('\n', '; ') if hasattr(out, 'summary') else out
    print(f'{label:>14}: {dc:6.1f} s CPU ({dt:6.1f} s wall) {n_images / dc:7.1f} img/s  {what}', flush=True)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--images', type=int, default=1000)
    parser.add_argument('--dets', type=int, default=150, help='detections per image per model')
    parser.add_argument('--width', type=int, default=1024)
    parser.add_argument('--height', type=int, default=768)
    parser.add_argument('--objects', type=int, default=400, help='distinct objects in the mask pool')
    parser.add_argument('--dense-images', type=int, default=3, help='images for the dense NMS baseline')
    parser.add_argument('--workdir', help='where the files go (default: a temporary directory, removed)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)

    work = args.workdir or tempfile.mkdtemp(prefix='bench_post_')
    os.makedirs(work, exist_ok=True)
    p = lambda name: os.path.join(work, name)
    rng = np.random.default_rng(args.seed)
    h = load_default()
    leaf_classes, parent_classes = h.subset('leaf'), h.subset('parent23')
    p23 = set(parent_classes)
    under_parent = [i for i, m in enumerate(leaf_classes) if h.ancestors(m) & p23]
    alone = [i for i, m in enumerate(leaf_classes) if not h.ancestors(m)]
    leaf_labels = [int(i) for i in np.concatenate([rng.choice(under_parent, 24, replace=False),
                                                   rng.choice(alone, 16, replace=False)])]
    # The parent model sees the same objects under the parents of their leaf labels.
    parent_labels = [parent_classes.index(next(a for a in h.ancestors_in_order(leaf_classes[i])
                                               if a in p23))
                     if i in under_parent else int(rng.integers(len(parent_classes))) for i in leaf_labels]

    t = time.perf_counter()
    pool = MaskPool(rng, args.objects, 4, args.width, args.height)
    synthesise(p('leaf.jsonl'), leaf_classes, leaf_labels, rng, pool, args.images, args.dets,
               args.width, args.height)
    synthesise(p('parent.jsonl'), parent_classes, parent_labels, rng, pool, args.images, args.dets,
               args.width, args.height)
    del pool
    mb = (os.path.getsize(p('leaf.jsonl')) + os.path.getsize(p('parent.jsonl'))) / 2**20
    print(f'synthesised {args.images} images x {args.dets} detections x 2 models at '
          f'{args.width}x{args.height} in {time.perf_counter() - t:.1f} s ({mb:.0f} MiB of results) '
          f'in {work}',
          flush=True)

    n, r = args.images, {}
    timed('results->csv', lambda: (results_to_submission(p('leaf.jsonl'), p('leaf.csv')),
                                   results_to_submission(p('parent.jsonl'), p('parent.csv'))), 2 * n, r)
    timed('expand', lambda: (
        expand_submission(p('leaf.csv'), p('leaf_parents.csv'), Expander(h, parents_only=True)),
        expand_submission(p('parent.csv'), p('parent_expanded.csv'), Expander(h))), 2 * n, r)
    timed('mask nms', lambda: mask_nms_submissions([p('leaf_parents.csv'), p('parent_expanded.csv')],
                                                   p('parent_nms.csv')), n, r)
    timed('combine', lambda: combine_leaf_and_parent(p('leaf.csv'), [p('parent_nms.csv')],
                                                     p('combined.csv')), n, r)
    rep = timed('validate', lambda: validate_submission(p('combined.csv'), classes=h.subset('all')), n, r)
    assert rep.ok, rep.problems[:5]
    peak = rss_mb()

    # Dense baseline on a small subset, the RLE version timed on the same images.
    subset = []
    for rows in iter_lockstep([p('leaf_parents.csv'), p('parent_expanded.csv')]):
        subset.append(([d for row in rows for d in row.detections], rows[0].height, rows[0].width))
        if len(subset) == args.dense_images:
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
          f'{t_fast / len(subset) * 1e3:.1f} ms/img, dense {t_dense / len(subset) * 1e3:.0f} ms/img '
          f'(peak RSS with dense masks {rss_mb():.0f} MiB)')
    if not args.workdir:
        shutil.rmtree(work)
    print(f'results_to_csv_img_per_s={r["results->csv"]:.1f} expand_img_per_s={r["expand"]:.1f} '
          f'mask_nms_img_per_s={r["mask nms"]:.1f} validate_img_per_s={r["validate"]:.1f} '
          f'nms_speedup_vs_dense={t_dense / t_fast:.1f} peak_rss_mb={peak:.0f}')


if __name__ == '__main__':
    main()
