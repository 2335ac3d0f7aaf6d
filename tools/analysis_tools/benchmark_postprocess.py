"""Time the post-processing chain (util.post.pipeline) on synthetic test shards of real size, against the
old way of running the same steps (a process per shard and step), and its peak memory.

``--images`` images of ``--width`` x ``--height``, split into ``--shards`` shards, with ``--dets`` leaf-model
and ``--dets`` parent-model detections each (clusters of overlapping elliptical masks, as an ensemble
produces). Over the same results files, each into its own work folder:

1. side by side, one step at a time and alternately (so that a drifting machine load slows both alike):
   the pipeline's plan step by step in this process (``run_step``: what ``--jobs 1`` does) and the same
   steps the old way, as ``python -m`` / script processes, one per shard and step, then the merge and
   one validation of the merged file (what scripts/postprocess.sh ran before it became a wrapper): CPU
   seconds per step (the children's own) and the wall-clock time of each way; the high-water mark of
   this process after the first shard and after all (each worker of a parallel run runs the same code);
2. the old way again, ``--jobs`` shards at a time (the old script's job pool), wall-clock time;
3. the pipeline with ``--jobs`` worker processes (``postprocess``), wall-clock time.

All four submissions must be byte-identical. Mask NMS is also compared with a naive dense-mask NMS
(full-size masks, numpy IoU per pair) on a few images. A line per step, then the machine-readable last
line:

    chain_images_per_s=... peak_rss_mb=... speedup_vs_per_process=...

``chain_images_per_s`` is images through the whole chain per wall-clock second with ``--jobs`` workers;
``peak_rss_mb`` the in-process run's high-water mark; ``speedup_vs_per_process`` the old way's wall-clock
time over the pipeline's, both with ``--jobs``.

    python tools/analysis_tools/benchmark_postprocess.py [--images 4000] [--shards 4] [--dets 120] [--jobs 2]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
from pycocotools import mask as mask_utils

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from util.common.hierarchy import load_default  # noqa: E402
from util.common.mask_codec import decode_encoded, encode_binary  # noqa: E402
from util.common.submission import iter_lockstep  # noqa: E402
from util.post.mask_nms import nms_detections  # noqa: E402
from util.post.merge import merge_submissions  # noqa: E402
from util.post.pipeline import (  # noqa: E402
    Options,
    chain_plan,
    discover_shards,
    postprocess,
    run_step,
)
from util.post.results_io import ResultsWriter  # noqa: E402

# Pipeline step -> the line it is reported on (the leaf and parent halves of a step are summed).
STEP_LINE = {'leaf_csv': 'results->csv', 'parent_csv': 'results->csv', 'leaf_parents': 'expand',
             'parent_expanded': 'expand', 'parent_nms': 'mask nms', 'combined': 'combine', 'valid': 'validate',
             'merge': 'merge'}
LINES = list(dict.fromkeys(STEP_LINE.values()))


def peak_rss_mb() -> float:
    """This process's high-water mark so far (it only grows)."""
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


def synthesise_shard(job) -> None:
    """Leaf and parent results of one shard (images ``first .. first + n_images``): the parent model
    sees the same objects under the parents of their leaf labels."""
    args, index, first, n_images = job
    rng = np.random.default_rng(args.seed + index)
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
    name = f'shard{index:02d}.jsonl'
    for model, classes, labels in (('leaf', leaf_classes, leaf_labels), ('parent', parent_classes, parent_labels)):
        synthesise(os.path.join(args.work, 'results', model, name), classes, labels, rng, pool, n_images,
                   args.dets, args.width, args.height, first)


def dense_nms(dets, height, width, thr=0.5):
    """The naive way: decode every mask to a full-size array, IoU of each pair with numpy."""
    keep = []
    for label in dict.fromkeys(d[0] for d in dets):
        idx = sorted((i for i, d in enumerate(dets) if d[0] == label), key=lambda i: -dets[i][1])
        masks = [mask_utils.decode(decode_encoded(dets[i][2], height, width)).astype(bool) for i in idx]
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


def run_child(cmd) -> float:
    """``python cmd...`` as a child process; its own CPU seconds (from wait4, exact also in threads)."""
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONWARNINGS='ignore')
    proc = subprocess.Popen([sys.executable, *cmd], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f'{cmd} failed: {err.decode()[-500:]}')
    return usage.ru_utime + usage.ru_stime


def old_shard_commands(s, work) -> list[tuple[str, list[str]]]:
    """A shard's steps as scripts/postprocess.sh ran them before it became a wrapper, one process each,
    in the order of the pipeline's plan (``chain_plan``)."""
    d = lambda step: os.path.join(work, step, s.name + '.csv')
    return [
        ('results->csv', ['-m', 'util.post.to_submission', s.leaf, '-o', d('leaf_csv'), '--score-thr', '0']),
        ('results->csv', ['-m', 'util.post.to_submission', s.parent, '-o', d('parent_csv'), '--score-thr', '0']),
        ('expand', ['-m', 'util.post.expand', d('leaf_csv'), '--parents-only', '-o', d('leaf_parents')]),
        ('expand', ['-m', 'util.post.expand', d('parent_csv'), '-o', d('parent_expanded')]),
        ('mask nms', ['-m', 'util.post.mask_nms', d('leaf_parents'), d('parent_expanded'), '-o', d('parent_nms'),
                      '--iou-thr', '0.5']),
        ('combine', [os.path.join(REPO, 'combine_leaf_and_parent.py'), '--leaf', d('leaf_csv'), '--parent',
                     d('parent_nms'), '-o', d('combined')]),
    ]


def old_final_commands(shards, work, ids, out) -> list[tuple[str, list[str]]]:
    """The old ending: merge, then one validation of the merged file."""
    return [('merge', ['-m', 'util.post.merge', *[os.path.join(work, 'combined', s.name + '.csv') for s in shards],
                       '--ids', ids, '-o', out]),
            ('validate', ['-m', 'util.post.validate', out, '--ids', ids])]


def side_by_side(shards, work_new, work_old, ids, out_new, out_old):
    """Both ways one step at a time, alternately (which goes first alternates too), so that a machine
    whose load drifts slows both alike: the pipeline's plan step by step in this process (what
    ``--jobs 1`` does), and the per-process commands. CPU and wall seconds per line and way, and this
    process's high-water marks after the first shard and at the end."""
    cpu = {w: dict.fromkeys(LINES, 0.0) for w in ('new', 'old')}
    wall = {'new': 0.0, 'old': 0.0}
    turn = 0

    def timed(way, line, fn):
        t, c = time.perf_counter(), time.process_time()
        child = fn()
        wall[way] += time.perf_counter() - t
        cpu[way][line] += child if way == 'old' else time.process_time() - c

    def pair(line_new, new_fn, line_old, cmd):
        nonlocal turn
        both = [('new', line_new, new_fn), ('old', line_old, lambda: run_child(cmd))]
        for way, line, fn in (both if turn % 2 == 0 else both[::-1]):
            timed(way, line, fn)
        turn += 1

    first_peak = None
    for shard in shards:
        plan = chain_plan(shard, work_new, ids, Options())
        for step, (line, cmd) in zip(plan, old_shard_commands(shard, work_old)):
            pair(STEP_LINE[step.name], lambda: run_step(step), line, cmd)
        timed('new', 'validate', lambda: run_step(plan[-1]))       # the pipeline validates each shard
        first_peak = first_peak or peak_rss_mb()
    (_, merge_cmd), (_, validate_cmd) = old_final_commands(shards, work_old, ids, out_old)
    combined = [os.path.join(work_new, 'combined', s.name + '.csv') for s in shards]
    pair('merge', lambda: merge_submissions(combined, ids, out_new), 'merge', merge_cmd)
    timed('old', 'validate', lambda: run_child(validate_cmd))
    return cpu, wall, first_peak, peak_rss_mb()


def per_process(shards, work, ids, out, jobs) -> float:
    """The per-process chain with ``jobs`` shards at a time (each shard's steps in order), as the old
    script's job pool ran it; wall seconds."""
    t = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(lambda s: [run_child(cmd) for _, cmd in old_shard_commands(s, work)], shards))
    for _, cmd in old_final_commands(shards, work, ids, out):
        run_child(cmd)
    return time.perf_counter() - t


def dense_baseline(work: str, name: str, n_images: int) -> None:
    """The RLE mask NMS and the dense-mask NMS on the same few images: same output, time per image."""
    subset = []
    for rows in iter_lockstep([os.path.join(work, 'leaf_parents', name + '.csv'),
                               os.path.join(work, 'parent_expanded', name + '.csv')]):
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
          f'speedup {t_dense / t_fast:.0f}x', flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--images', type=int, default=4000, help='images in all (split into the shards)')
    parser.add_argument('--shards', type=int, default=4, help='test shards')
    parser.add_argument('--dets', type=int, default=120, help='detections per image per model')
    parser.add_argument('--jobs', type=int, default=2, help='worker processes of the parallel run')
    parser.add_argument('--width', type=int, default=1024)
    parser.add_argument('--height', type=int, default=768)
    parser.add_argument('--objects', type=int, default=400, help='distinct objects in the mask pool')
    parser.add_argument('--dense-images', type=int, default=3, help='images for the dense NMS baseline')
    parser.add_argument('--workdir', help='where the files go (default: a temporary directory, removed)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if args.images < args.shards or args.shards < 1 or args.jobs < 1:
        parser.error('need --images >= --shards >= 1 and --jobs >= 1')

    args.work = args.workdir or tempfile.mkdtemp(prefix='bench_post_')
    os.makedirs(args.work, exist_ok=True)
    bounds = np.linspace(0, args.images, args.shards + 1).astype(int)
    jobs = [(args, i, int(a), int(b - a)) for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]
    ids = os.path.join(args.work, 'sample.csv')
    with open(ids, 'w') as f:
        f.write('ImageID,ImageWidth,ImageHeight,PredictionString\n')
        f.writelines(f'{k:016x},{args.width},{args.height},\n' for k in range(args.images))
    t = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:         # synthesis in children: this process stays small
        list(pool.map(synthesise_shard, jobs))
    synthesis = time.perf_counter() - t
    shards = discover_shards(os.path.join(args.work, 'results', 'leaf'), os.path.join(args.work, 'results', 'parent'))
    n = args.images
    print(f'{n} images in {args.shards} shards x {args.dets} detections x 2 models at {args.width}x{args.height}; '
          f'synthesis {synthesis:.0f} s, in {args.work}', flush=True)

    out = {k: os.path.join(args.work, f'{k}.csv') for k in ('in_process', 'old_side', 'parallel', 'per_process')}
    cpu, wall, first_peak, peak = side_by_side(shards, os.path.join(args.work, 'in_process'),
                                               os.path.join(args.work, 'old_side'), ids, out['in_process'],
                                               out['old_side'])
    wall_old = per_process(shards, os.path.join(args.work, 'per_process'), ids, out['per_process'], args.jobs)
    t = time.perf_counter()
    postprocess(os.path.join(args.work, 'results', 'leaf'), os.path.join(args.work, 'results', 'parent'), ids,
                os.path.join(args.work, 'parallel'), out['parallel'], jobs=args.jobs)
    wall_new = time.perf_counter() - t
    reference = open(out['per_process'], 'rb').read()
    for k in ('in_process', 'old_side', 'parallel'):
        assert open(out[k], 'rb').read() == reference, f'{k} differs from the per-process chain'
    print('the four submissions (pipeline in process and with --jobs, per process twice) are byte-identical')

    def line(name, a, b):
        print(f'{name:>14}: pipeline {a:7.2f} s CPU {n / max(a, 1e-9):8.1f} img/s | per process {b:7.2f} s CPU '
              f'{n / max(b, 1e-9):8.1f} img/s | {b / max(a, 1e-9):5.2f}x', flush=True)

    for name in LINES:
        line(name, cpu['new'][name], cpu['old'][name])
    line('chain', sum(cpu['new'].values()), sum(cpu['old'].values()))
    print(f'chain wall-clock, one job, side by side: pipeline {wall["new"]:.1f} s ({n / wall["new"]:.1f} img/s), '
          f'per process {wall["old"]:.1f} s ({n / wall["old"]:.1f} img/s): {wall["old"] / wall["new"]:.2f}x')
    print(f'chain wall-clock, {args.jobs} jobs: pipeline {wall_new:.1f} s ({n / wall_new:.1f} img/s), per process '
          f'{wall_old:.1f} s ({n / wall_old:.1f} img/s): {wall_old / wall_new:.2f}x')
    print(f'peak RSS {first_peak:.0f} MiB after the first of {args.shards} shards, {peak:.0f} MiB after all '
          '(in process, the same code as each worker)', flush=True)
    dense_baseline(os.path.join(args.work, 'in_process'), shards[0].name, args.dense_images)
    if not args.workdir:
        shutil.rmtree(args.work)
    print(f'chain_images_per_s={n / wall_new:.1f} peak_rss_mb={peak:.0f} '
          f'speedup_vs_per_process={wall_old / wall_new:.2f}')


if __name__ == '__main__':
    main()
