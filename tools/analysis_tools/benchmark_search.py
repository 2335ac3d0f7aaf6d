"""The cost of one search trial: the metric through a session, and a whole trial fused in its workers.

A search scores every trial on the same validation images (``util.search``). ``util.metric.session``
reads the ground truth once per study (CSVs parsed, PNGs decoded and resized, kept in the metric's
worker processes) and remembers what it read of every mask string it checked, so a trial pays only for
what is new in its predictions. On the synthetic validation-scale set of ``benchmark_eval.py`` (images of
long side 1024, ~5 GT masks, 100 detections per model and image; ``--views`` models) this times:

- ``evaluate_files_s``: one submission's mAP the way ``util.metric.evaluate`` computes it, files and all;
- ``session_setup_s``: the session's one-off ground-truth load;
- ``metric_cold_s``: the same submission through the session the first time (every mask new);
- ``metric_warm_s``: the same again (every mask remembered: e.g. an NMS fusion's survivors);
- ``trial_s``: a search trial (the member-views fused in the session's workers, then scored on both
  folds), the mean over ``--trials`` settings of wbf, vote and NMS; ``trial_metric_s``: the metric's part
  of it (the workers' seconds in the metric, per worker: what is left when the fusion is taken out);
- ``lead_trial_ms_per_image`` against ``trial_ms_per_image``: the first setting on ``--baseline-images``
  images fused in this process and sent (the way before the workers fused) and fused in the workers
  with an empty mask memory, in the same run.

The session and ``util.metric.evaluate`` give the same mAP (checked), and so do both trial ways. Last line:

    trial_s=... trial_metric_s=... metric_cold_s=... metric_warm_s=... session_setup_s=... evaluate_files_s=... images=...

    python tools/analysis_tools/benchmark_search.py [--images 5000] [--workers 2] [--views 3] [--trials 6]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, HERE)

from benchmark_eval import ensure_dataset, ensure_view  # noqa: E402

from util.common.hierarchy import DEFAULT_CLASSES, DEFAULT_HIERARCHY  # noqa: E402
from util.common.submission import iter_submission  # noqa: E402
from util.metric.evaluate import evaluate_files  # noqa: E402
from util.metric.session import MetricSession  # noqa: E402
from util.search.members import MemberSet, split_folds  # noqa: E402
from util.search.space import DEFAULTS  # noqa: E402
from util.search.trial import score_setting  # noqa: E402

SETTINGS = (dict(method='wbf', iou_thr=0.55), dict(method='vote', iou_thr=0.6), dict(method='nms', iou_thr=0.5),
            dict(method='wbf', iou_thr=0.65, score_thr=0.05), dict(method='vote', iou_thr=0.5, nms_iou=0.5),
            dict(method='nms', iou_thr=0.6, max_per_img=60))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--images', type=int, default=5000)
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--views', type=int, default=3, help='member-views (models) fused by a trial')
    p.add_argument('--trials', type=int, default=6)
    p.add_argument('--baseline-images', type=int, default=200)
    p.add_argument('--data-dir', help='the synthetic set (default: oid-eval-bench-N in the temporary folder, '
                                      'shared with benchmark_eval.py)')
    a = p.parse_args(argv)
    out = ensure_dataset(a.images, a.workers, a.data_dir)
    files = [os.path.join(out, n) for n in ('masks.csv', 'masks', 'bbox.csv', 'labels.csv')]
    sub = os.path.join(out, 'sub.csv')
    views = [sub] + [ensure_view(out, a.images, a.workers, v) for v in range(1, a.views)]
    predictions, sizes = {}, {}
    for row in iter_submission(sub):
        predictions[row.image_id] = tuple(zip(*row.detections)) if row.detections else ((), (), ())
        sizes[row.image_id] = (row.height, row.width)
    dets = sum(len(p[0]) for p in predictions.values()) / max(1, len(predictions))
    members = MemberSet.from_files([(f'm{v}', 'view', path) for v, path in enumerate(views)])
    folds = split_folds(members.sizes, 0)
    settings = [dict(DEFAULTS, **SETTINGS[k % len(SETTINGS)], weights={m: 1.0 + 0.1 * j for j, m in
                                                                       enumerate(members.members)})
                for k in range(a.trials)]

    t = time.perf_counter()
    reference = evaluate_files(*files, DEFAULT_HIERARCHY, DEFAULT_CLASSES, sub, workers=a.workers,
                               log=lambda *x, **k: None, submitted_only=True)
    files_s = time.perf_counter() - t
    t = time.perf_counter()
    with MetricSession(*files, DEFAULT_HIERARCHY, DEFAULT_CLASSES, sizes, workers=a.workers,
                       worker_data=members) as session:
        setup_s = time.perf_counter() - t
        t = time.perf_counter()
        cold = session.evaluate(predictions)
        cold_s = time.perf_counter() - t
        t = time.perf_counter()
        warm = session.evaluate(predictions)
        warm_s = time.perf_counter() - t
        times, metric_times = [], []
        for k, setting in enumerate(settings):
            t, metric_before = time.perf_counter(), session.metric_s
            fold_a, fold_b = score_setting(setting, members, session, folds)
            times.append(time.perf_counter() - t)
            metric_times.append((session.metric_s - metric_before) / a.workers)
            print(f'trial {k}: {setting["method"]} iou {setting["iou_thr"]}: {times[-1]:.2f} s, of which metric '
                  f'{metric_times[-1]:.2f} s per worker; fold A {fold_a:.4f} fold B {fold_b:.4f}', flush=True)
    for name, value in (('cold', cold.mean_ap), ('warm', warm.mean_ap)):
        if value != reference.mean_ap:
            sys.exit(f'error: the session ({name}) gives mAP {value}, util.metric.evaluate {reference.mean_ap}')

    few = sorted(sizes)[:a.baseline_images]
    few_folds = tuple([i for i in fold if i in set(few)] for fold in folds)
    few_sizes = {i: sizes[i] for i in few}
    with MetricSession(*files, DEFAULT_HIERARCHY, DEFAULT_CLASSES, few_sizes, workers=a.workers,
                       cache_masks=0) as lead, \
            MetricSession(*files, DEFAULT_HIERARCHY, DEFAULT_CLASSES, few_sizes, workers=a.workers,
                          worker_data=members) as workers:
        t = time.perf_counter()
        by_lead = score_setting(settings[0], members, lead, few_folds)
        lead_s = time.perf_counter() - t
        t = time.perf_counter()
        by_workers = score_setting(settings[0], members, workers, few_folds)
        workers_s = time.perf_counter() - t
    if by_lead != by_workers:
        sys.exit(f'error: fused in the workers {by_workers}, in the lead {by_lead}')
    print(f'{len(predictions)} images x {dets:.0f} detections x {a.views} views, {a.workers} workers: '
          f'mAP {cold.mean_ap:.6f} from the files and the session (cold and warm)')
    print(f'lead_trial_ms_per_image={1000 * lead_s / len(few):.1f} '
          f'trial_ms_per_image={1000 * workers_s / len(few):.1f} on {len(few)} images '
          f'({lead_s / workers_s:.2f}x; same mAPs {by_lead[0]:.4f}, {by_lead[1]:.4f})')
    print(f'trial_s={sum(times) / len(times):.2f} trial_metric_s={sum(metric_times) / len(metric_times):.2f} '
          f'metric_cold_s={cold_s:.2f} metric_warm_s={warm_s:.2f} '
          f'session_setup_s={setup_s:.2f} evaluate_files_s={files_s:.2f} images={len(predictions)} '
          f'views={a.views} workers={a.workers}')


if __name__ == '__main__':
    main()
