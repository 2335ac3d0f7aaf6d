"""Cost of the strict EncodedMask decode against the lenient one it replaced, on masks of real size.

Every reader decodes through ``mask_codec.decode_encoded_batch``: strict base64, complete zlib data,
run totals checked on the compressed counts (``run_totals``, batched per image). The lenient path is what
the readers did before: ``zlib.decompress(base64.b64decode(s))``, no checks. Both decode the same images
(``--images`` of ``--width`` x ``--height`` with ``--dets`` elliptical masks each, log-uniform sizes, as an
ensemble produces) ``--repeats`` times; the best repeat of each counts (a shared machine is noisy).

The two steps whose work grew with the strict checks are then timed whole, from files, strict and with
the lenient decode put back in the same run: mask NMS (it now checks every mask, also a label's only
one) and results -> CSV (it now checks every record's counts). Last lines:

    step=mask_nms strict_s=... lenient_s=... ratio=...
    step=to_submission strict_s=... lenient_s=... ratio=...
    strict_vs_lenient_ratio=... strict_us_per_mask=... lenient_us_per_mask=... nms_step_ratio=...
        to_submission_step_ratio=...   (one line)

    python tools/analysis_tools/benchmark_codec.py [--images 50] [--dets 120] [--width 1024] [--height 768]
"""
from __future__ import annotations

import argparse
import base64
import os
import sys
import tempfile
import time
import zlib
from contextlib import contextmanager, nullcontext

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from util.common.mask_codec import decode_encoded_batch, encode_mask  # noqa: E402
from util.common.submission import SubmissionWriter  # noqa: E402
from util.post import mask_nms, to_submission  # noqa: E402
from util.post.results_io import ResultsWriter  # noqa: E402

LABELS = [f'/m/{k:04d}' for k in range(20)]


def make_images(rng, n_images: int, n_dets: int, width: int, height: int, n_masks: int = 240):
    """``n_images`` lists of (label, score, EncodedMask); masks drawn from a pool of ellipses."""
    yy, xx = np.mgrid[0:height, 0:width]
    pool = []
    for _ in range(n_masks):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ay, ax = np.exp(rng.uniform(np.log(6), np.log(height / 2.5), 2))
        pool.append(encode_mask((((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2) <= 1))
    labels = LABELS
    return [[(labels[rng.integers(len(labels))], float(rng.random()), pool[rng.integers(n_masks)])
             for _ in range(n_dets)] for _ in range(n_images)]


def lenient(encoded, height, width, where=''):
    return [{'size': [height, width], 'counts': zlib.decompress(base64.b64decode(s))} for s in encoded]


@contextmanager
def lenient_steps():
    """The steps as they read before the strict codec: no check of the counts, base64 decoded leniently."""
    saved = mask_nms.decode_encoded_batch, to_submission.check_record
    mask_nms.decode_encoded_batch = lenient
    to_submission.check_record = lambda rec, n_classes, where: [
        {'size': [rec.height, rec.width], 'counts': r['counts'].encode()} for r in rec.rles]
    try:
        yield
    finally:
        mask_nms.decode_encoded_batch, to_submission.check_record = saved


def time_steps(images, height, width, labels, repeats: int) -> dict[str, tuple[float, float]]:
    """step -> (strict seconds, lenient seconds), best of ``repeats``, on files in a temporary folder."""
    with tempfile.TemporaryDirectory() as d:
        csv, results = os.path.join(d, 'in.csv'), os.path.join(d, 'in.jsonl')
        with SubmissionWriter(csv) as w:
            for k, dets in enumerate(images):
                w.write(f'{k:016x}', width, height, dets)
        index = {m: i for i, m in enumerate(labels)}
        with ResultsWriter(results, labels) as w:
            for k, dets in enumerate(images):
                w.write(f'{k:016x}', width, height, [index[d[0]] for d in dets], [d[1] for d in dets],
                        [{'size': [height, width], 'counts': zlib.decompress(base64.b64decode(d[2])).decode()}
                         for d in dets])
        steps = {'mask_nms': lambda: mask_nms.mask_nms_submissions([csv], os.path.join(d, 'nms.csv')),
                 'to_submission': lambda: to_submission.results_to_submission(results, os.path.join(d, 'r.csv'))}
        out = {}
        for name, step in steps.items():
            best = []
            for lenient_mode in (False, True):
                t = float('inf')
                for _ in range(repeats):
                    with lenient_steps() if lenient_mode else nullcontext():
                        t0 = time.perf_counter()
                        step()
                        t = min(t, time.perf_counter() - t0)
                best.append(t)
            out[name] = tuple(best)
    return out


def best_time(fn, images, height, width, repeats: int) -> float:
    best = float('inf')
    for _ in range(repeats):
        t0 = time.perf_counter()
        for dets in images:
            fn([d[2] for d in dets], height, width)
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--images', type=int, default=50)
    p.add_argument('--dets', type=int, default=120)
    p.add_argument('--width', type=int, default=1024)
    p.add_argument('--height', type=int, default=768)
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    images = make_images(np.random.default_rng(args.seed), args.images, args.dets, args.width, args.height)
    h, w = args.height, args.width
    for dets in images:                                # same bytes either way
        assert lenient([d[2] for d in dets], h, w) == decode_encoded_batch([d[2] for d in dets], h, w)
    t_lenient = best_time(lenient, images, h, w, args.repeats)
    t_strict = best_time(decode_encoded_batch, images, h, w, args.repeats)
    masks = args.images * args.dets
    print(f'{args.images} images x {args.dets} masks of {w}x{h}: lenient decode {t_lenient:.3f} s, '
          f'strict decode {t_strict:.3f} s')
    steps = time_steps(images, h, w, LABELS, max(1, args.repeats // 2))
    for name, (strict, loose) in steps.items():
        print(f'step={name} strict_s={strict:.3f} lenient_s={loose:.3f} ratio={strict / loose:.3f}')
    print(f'strict_vs_lenient_ratio={t_strict / t_lenient:.2f} strict_us_per_mask={1e6 * t_strict / masks:.1f} '
          f'lenient_us_per_mask={1e6 * t_lenient / masks:.1f} '
          f'nms_step_ratio={steps["mask_nms"][0] / steps["mask_nms"][1]:.3f} '
          f'to_submission_step_ratio={steps["to_submission"][0] / steps["to_submission"][1]:.3f}')


if __name__ == '__main__':
    main()
