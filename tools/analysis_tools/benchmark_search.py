"""The metric time of one search trial, against scoring the same predictions from the files each time.

A search scores every trial on the same validation images (``util.search``). ``util.metric.session``
reads the ground truth once per study (CSVs parsed, PNGs decoded and resized, kept in the metric's
worker processes), so a trial pays only for its predictions. On the synthetic validation-scale set of
``benchmark_eval.py`` (images of long side 1024, ~5 GT masks, ``--dets`` detections each) this times:

- ``session_setup_s``: the session's one-off ground-truth load;
- ``trial_s``: one evaluation of all the predictions through the session (best of ``--repeats``);
- ``evaluate_files_s``: the same mAP the way ``util.metric.evaluate`` computes it, files and all.

Both give the same mAP (checked). Last line:

    trial_s=... session_setup_s=... evaluate_files_s=... trial_speedup=... images=... workers=...

    python tools/analysis_tools/benchmark_search.py [--images 5000] [--workers 2] [--data-dir DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, HERE)

from benchmark_eval import ensure_dataset  # noqa: E402

from util.common.hierarchy import DEFAULT_CLASSES, DEFAULT_HIERARCHY  # noqa: E402
from util.common.submission import iter_submission  # noqa: E402
from util.metric.evaluate import evaluate_files  # noqa: E402
from util.metric.session import MetricSession  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--images', type=int, default=5000)
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--data-dir', help='the synthetic set (default: oid-eval-bench-N in the temporary folder, '
                                      'shared with benchmark_eval.py)')
    a = p.parse_args(argv)
    out = ensure_dataset(a.images, a.workers, a.data_dir)
    files = [os.path.join(out, n) for n in ('masks.csv', 'masks', 'bbox.csv', 'labels.csv')]
    sub = os.path.join(out, 'sub.csv')
    predictions, sizes = {}, {}
    for row in iter_submission(sub):
        predictions[row.image_id] = tuple(zip(*row.detections)) if row.detections else ((), (), ())
        sizes[row.image_id] = (row.height, row.width)
    dets = sum(len(p[0]) for p in predictions.values()) / max(1, len(predictions))

    t = time.perf_counter()
    reference = evaluate_files(*files, DEFAULT_HIERARCHY, DEFAULT_CLASSES, sub, workers=a.workers,
                               log=lambda *x, **k: None, submitted_only=True)
    files_s = time.perf_counter() - t
    t = time.perf_counter()
    with MetricSession(*files, DEFAULT_HIERARCHY, DEFAULT_CLASSES, sizes, workers=a.workers) as session:
        setup_s = time.perf_counter() - t
        best = float('inf')
        for _ in range(a.repeats):
            t = time.perf_counter()
            result = session.evaluate(predictions)
            best = min(best, time.perf_counter() - t)
    if result.mean_ap != reference.mean_ap:
        sys.exit(f'error: the session gives mAP {result.mean_ap}, util.metric.evaluate {reference.mean_ap}')
    print(f'{len(predictions)} images x {dets:.0f} detections, {a.workers} workers: mAP {result.mean_ap:.6f} '
          f'both ways')
    print(f'trial_s={best:.2f} session_setup_s={setup_s:.2f} evaluate_files_s={files_s:.2f} '
          f'trial_speedup={files_s / best:.2f} images={len(predictions)} workers={a.workers}')


if __name__ == '__main__':
    main()
