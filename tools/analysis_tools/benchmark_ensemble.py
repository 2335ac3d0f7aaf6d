"""What the ensemble's merging costs: its time per image against the sum of its views' plain predictions.

Every model x view is also run as mmdet's own single-model prediction (``model.test_step`` on the same
resized, possibly mirrored input: RPN, cascade, masks pasted at original size). The two are timed
image by image in the same run, so machine load affects both alike. The ensemble keeps as many shared
proposals as one view's RPN gives (the reference: 1000 per view, 1000 merged), so the ratio measures the
merging, not a larger proposal set.

    python tools/analysis_tools/benchmark_ensemble.py [--configs C1 C2] [--checkpoints W1 W2] \
        [--scales 256,256 320,320] [--flip] [--images-dir DIR | --num-images 10]

Without checkpoints the models get random weights (seeds 0, 1, ...): timing does not need trained ones.
Memory: the resident size is read after every image; its growth from the first half of the images to the
end shows whether anything accumulates over a shard (it should stay flat).
The last line reads ``ensemble_overhead_pct=... images_per_s=... peak_rss_mb=...`` (overhead: the
ensemble's time over the sum of its views' plain predictions, minus 100%; negative = cheaper).
"""
import argparse
import os
import resource
import sys
import tempfile
import time
import warnings

warnings.filterwarnings('ignore', category=UserWarning)

import torch  # noqa: E402
from mmdet.structures import DetDataSample  # noqa: E402

from mmdet_ext.ensemble import FUSIONS, Member, StageTimer, view_specs  # noqa: E402
from mmdet_ext.launch import load_config  # noqa: E402

TINY = 'configs/tiny/cascade-mask-rcnn_r18-tiny_fpn_oid-leaf.py'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--configs', nargs='+', default=[TINY, TINY])
    p.add_argument('--checkpoints', nargs='+', help='default: random weights')
    p.add_argument('--scales', nargs='+', default=['256,256', '320,320'])
    p.add_argument('--flip', action='store_true', default=True)
    p.add_argument('--no-flip', dest='flip', action='store_false')
    p.add_argument('--images-dir', help='benchmark on these images (default: synthetic ones)')
    p.add_argument('--num-images', type=int, default=10)
    p.add_argument('--warmup', type=int, default=3,
                   help='untimed images first: oneDNN is several times slower on its first few calls')
    p.add_argument('--score-thr', type=float, default=0.0)
    p.add_argument('--max-proposals', type=int, help="default: the first config's RPN max_per_img")
    p.add_argument('--device', default='cpu')
    p.add_argument('--threads', type=int, help="torch CPU threads (default: torch's)")
    return p.parse_args(argv)


def build_models(configs, checkpoints, device):
    from mmdet.apis import init_detector
    models = []
    for i, cfg in enumerate(configs):
        torch.manual_seed(i)
        model = init_detector(load_config(cfg), checkpoints[i] if checkpoints else None, device=device)
        models.append(model)
    return models


def image_paths(args, workdir):
    if args.images_dir:
        names = sorted(n for n in os.listdir(args.images_dir)
                       if n.lower().endswith(('.jpg', '.jpeg', '.png')))
        return [os.path.join(args.images_dir, n) for n in names[:args.num_images]]
    from util.data.synthetic import generate
    generate(workdir, seed=0, train=0, val=0, test=args.num_images, progress=False)
    folder = os.path.join(workdir, 'test')
    return [os.path.join(folder, n) for n in sorted(os.listdir(folder))]


def rss_mb() -> float:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return float('nan')


def plain_views(ensemble, path):
    """Each model x view as mmdet's own single-model prediction on that view's input."""
    for model in (m.model for m in ensemble.members):
        for view in ensemble.view_maker(path):
            sample = DetDataSample(metainfo=view.metainfo)
            model.test_step({'inputs': [view.inputs], 'data_samples': [sample]})


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    models = build_models(args.configs, args.checkpoints, args.device)
    for m in models:
        m.test_cfg.rcnn.score_thr = args.score_thr
    max_proposals = args.max_proposals or models[0].test_cfg.rpn.max_per_img
    scales = [tuple(int(v) for v in s.split(',')) for s in args.scales]
    timer = StageTimer()
    ensemble = FUSIONS.build(dict(type='SharedProposals', max_proposals=max_proposals), default_args=dict(
        members=[Member(m) for m in models], views=view_specs(scales, args.flip), timer=timer))
    with tempfile.TemporaryDirectory() as workdir:
        paths = image_paths(args, workdir)
        if not paths:
            sys.exit('error: no images')
        with torch.no_grad():
            for i in range(args.warmup):
                ensemble.predict(paths[i % len(paths)])
                plain_views(ensemble, paths[i % len(paths)])
            timer.seconds.clear()
            ens_s = plain_s = 0.0
            detections = 0
            rss = []
            for path in paths:
                start = time.perf_counter()
                detections += len(ensemble.predict(path))
                ens_s += time.perf_counter() - start
                rss.append(rss_mb())
                start = time.perf_counter()
                plain_views(ensemble, path)
                plain_s += time.perf_counter() - start
    n = len(paths)
    views = len(models) * len(ensemble.specs)
    print(f'{len(models)} models x {len(ensemble.specs)} views ({", ".join(args.scales)}'
          f'{" x flip" if args.flip else ""}) = {views} passes; {n} images; '
          f'{max_proposals} shared proposals; '
          f'{torch.get_num_threads()} threads; {detections / n:.1f} detections/img')
    print('ensemble stages, s/img:')
    for stage, seconds in timer.seconds.items():
        print(f'  {stage:<16} {seconds / n:8.4f}  ({100 * seconds / ens_s:4.1f}%)')
    half = rss[:max(1, n // 2)]
    print(f'ensemble_s_per_img={ens_s / n:.4f} plain_views_s_per_img={plain_s / n:.4f} '
          f'overhead_ratio={ens_s / plain_s:.3f}')
    print(f'rss_mb: after first half {max(half):.0f}, at end {rss[-1]:.0f} '
          f'(growth {rss[-1] - max(half):+.0f} MB over {n - len(half)} images)')
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f'ensemble_overhead_pct={100 * (ens_s / plain_s - 1):.1f} images_per_s={n / ens_s:.3f} '
          f'peak_rss_mb={peak:.0f}')


if __name__ == '__main__':
    main()
