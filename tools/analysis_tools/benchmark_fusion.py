"""Time the fusion of instance-segmentation predictions at real size.

Sections (``--what``, default all):

    submission  ``util.post.fuse`` over ``--inputs`` synthetic submissions of ``--images`` images of
                ``--width`` x ``--height``, ``--dets`` detections each per input (the same objects seen by
                every input with jittered masks, mostly under their own label, once each: what models
                give after their own NMS), every method with ``--jobs 1`` and with each of ``--jobs``; the
                outputs of one method must be byte-identical whatever the jobs. A line per run:

                    submission_fusion_images_per_s=... method=wbf jobs=1 inputs=3 ms_per_image=... cpu_ms_per_image=...

                (wall-clock per image, and CPU per image of this process and its workers: the second
                does not depend on what else the machine runs)

The last line is machine-readable, one value per section (the ``--jobs`` maximum, method wbf, and this
process's high-water mark, which stays small because the inputs are streamed):

    submission_fusion_images_per_s=... peak_rss_mb=...

    python tools/analysis_tools/benchmark_fusion.py [--what submission] [--images 200] [--inputs 3]
        [--dets 120] [--jobs 2] [--width 1024] [--height 768] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchmark_postprocess import MaskPool  # noqa: E402

from util.common.cli import run  # noqa: E402
from util.common.hierarchy import load_default  # noqa: E402
from util.common.mask_codec import rle_to_encoded  # noqa: E402
from util.common.submission import SubmissionWriter  # noqa: E402
from util.post.fuse import METHODS, FuseOptions, fuse_submissions  # noqa: E402

SECTIONS = ('submission',)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (the workers of a finished pool)."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def synthetic_submissions(args, folder: str) -> list[str]:
    """``args.inputs`` submissions of the same images, as models after their own NMS give them: per image
    0.8 x dets objects, each found by every input with probability 0.9 under its own label (a jittered
    variant of its mask, its own score), the rest of the ``dets`` detections confusions (an object under
    another label). Inputs after the first list the images in another order, as other codebases may."""
    rng = np.random.default_rng(args.seed)
    pool = MaskPool(rng, args.objects, 4, args.width, args.height)
    encoded = [[rle_to_encoded(r) for r in group] for group in pool.variants]
    classes = load_default().subset('leaf')
    object_label = rng.choice(len(classes), len(encoded))
    images = []
    for k in range(args.images):
        objects = rng.choice(len(encoded), min(len(encoded), max(1, int(args.dets * 0.8))), replace=False)
        per_input = []
        for _ in range(args.inputs):
            found = [(object_label[o], o) for o in objects if rng.random() < 0.9]
            while len(found) < args.dets:
                found.append((rng.integers(len(classes)), objects[rng.integers(len(objects))]))
            per_input.append([(classes[label], round(float(rng.beta(0.7, 2.0)), 4),
                               encoded[o][rng.integers(len(encoded[o]))]) for label, o in found[:args.dets]])
        images.append((f'{k:016x}', per_input))
    paths = []
    for t in range(args.inputs):
        order = range(len(images)) if t == 0 else rng.permutation(len(images))
        paths.append(os.path.join(folder, f'input{t}.csv'))
        with SubmissionWriter(paths[-1]) as w:
            for i in order:
                w.write(images[i][0], args.width, args.height, images[i][1][t])
    return paths


def submission_section(args) -> dict[str, float]:
    t = time.perf_counter()
    inputs = synthetic_submissions(args, args.work)
    size = sum(os.path.getsize(p) for p in inputs) / 2 ** 20
    print(f'{args.inputs} submissions x {args.images} images x {args.dets} detections at {args.width}x{args.height} '
          f'({size:.0f} MiB) made in {time.perf_counter() - t:.0f} s, in {args.work}', flush=True)
    result = {}
    for method in METHODS:
        reference = None
        for jobs in sorted({1, *args.jobs}):
            out = os.path.join(args.work, f'fused_{method}_{jobs}.csv')
            t, cpu = time.perf_counter(), cpu_seconds()
            stats = fuse_submissions(inputs, out, FuseOptions(method=method), jobs=jobs)
            wall, cpu = time.perf_counter() - t, cpu_seconds() - cpu
            rate = stats.images / wall
            print(f'submission_fusion_images_per_s={rate:.1f} method={method} jobs={jobs} inputs={args.inputs} '
                  f'ms_per_image={wall / stats.images * 1e3:.1f} cpu_ms_per_image={cpu / stats.images * 1e3:.1f} '
                  f'detections={stats.detections_in}->'
                  f'{stats.detections_out}', flush=True)
            data = Path(out).read_bytes()
            assert reference is None or data == reference, f'{method}: --jobs {jobs} wrote other bytes'
            reference = data
            os.unlink(out)
            if method == 'wbf':
                result['submission_fusion_images_per_s'] = rate
    print('every method wrote the same bytes whatever --jobs', flush=True)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--what', nargs='+', choices=SECTIONS, default=list(SECTIONS), help='sections to run')
    parser.add_argument('--images', type=int, default=200)
    parser.add_argument('--inputs', type=int, default=3, help='submissions fused (submission section)')
    parser.add_argument('--dets', type=int, default=120, help='detections per image per input')
    parser.add_argument('--jobs', type=int, nargs='+', default=[2], help='worker counts besides 1')
    parser.add_argument('--width', type=int, default=1024)
    parser.add_argument('--height', type=int, default=768)
    parser.add_argument('--objects', type=int, default=300, help='distinct objects in the mask pool')
    parser.add_argument('--workdir', help='where the files go (default: a temporary directory, removed)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if args.images < 1 or args.inputs < 1 or args.dets < 1 or min(args.jobs) < 1:
        parser.error('--images, --inputs, --dets and --jobs must be at least 1')
    args.work = args.workdir or tempfile.mkdtemp(prefix='bench_fusion_')
    os.makedirs(args.work, exist_ok=True)
    values = {}
    try:
        if 'submission' in args.what:
            values.update(submission_section(args))
    finally:
        if not args.workdir:
            shutil.rmtree(args.work)
    values['peak_rss_mb'] = peak_rss_mb()
    print(' '.join(f'{k}={v:.1f}' if k != 'peak_rss_mb' else f'{k}={v:.0f}' for k, v in values.items()))


if __name__ == '__main__':
    sys.exit(run(main))
