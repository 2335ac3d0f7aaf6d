"""What resuming at iteration k costs before the first training step: mmengine's way against ours.

mmengine's ``IterBasedTrainLoop`` fast-forwards by fetching k batches through the DataLoader (every image
read, decoded, augmented) and dropping them; ``ResumableIterBasedTrainLoop`` tells
``ResumableAspectRatioBatchSampler`` to skip k batches of indices. Both are timed here on the real leaf
config's training dataloader (its pipeline, batch size, workers, rebalanced index list) over a synthetic
download of real image size, each up to the first batch after the k skipped ones, and both must deliver
the same batch. Then the skip alone (indices only) is timed for a resume late in the L1 schedule
(``--late-iters``), where mmengine's cost is extrapolated from its measured time per batch.

    python tools/analysis_tools/benchmark_resume.py [--iters 60] [--images 60] [--workers 2]

The last line reads ``fetch_s_per_1k_iters=... skip_s_at_late_iter=... resume_speedup_at_late_iter=...``.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings

warnings.filterwarnings('ignore', category=UserWarning)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmengine.registry import DefaultScope  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmdet_ext  # noqa: E402,F401
from mmdet_ext.launch import load_config  # noqa: E402

CONFIG = os.path.join(ROOT, 'configs/oid/cascade-mask-rcnn_x101-64x4d_fpn_oid-leaf.py')


def make_dataset(root: str, images: int) -> None:
    """Synthetic train split with real-size images, its leaf annotation file and banded index list."""
    from util.data.synthetic import generate
    generate(root, seed=0, train=images, val=0, test=0, long_side=(800, 1024), progress=False)
    ann = os.path.join(root, 'annotations/leaf-train.pkl')
    for args in (['util.data.build', '--masks-csv',
                  os.path.join(root, 'challenge-2019-train-segmentation-masks.csv'), '--img-root', root,
                  '--subset', 'leaf', '--no-progress', '--out', ann],
                 ['util.data.rebalance', ann, '--out', os.path.join(root, 'annotations/leaf-train-balanced.npy')]):
        subprocess.run([sys.executable, '-m', *args], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def build_dataloader(root: str, workers: int):
    cfg = load_config(CONFIG, {'data_root': root + '/',
                               'train_dataloader.num_workers': workers,
                               'train_dataloader.persistent_workers': workers > 0})
    with DefaultScope.overwrite_default_scope('mmdet'):
        return Runner.build_dataloader(cfg.train_dataloader, seed=0)


def first_batch_after(root: str, workers: int, iters: int, skip: bool):
    """Seconds until the batch after ``iters`` skipped ones is in hand, and that batch's image ids."""
    loader = build_dataloader(root, workers)
    t = time.perf_counter()
    if skip:
        loader.batch_sampler.skip(iters)
        it = iter(loader)
    else:
        it = iter(loader)
        for _ in range(iters):
            next(it)
    batch = next(it)
    elapsed = time.perf_counter() - t
    del it, loader
    return elapsed, [s.metainfo['img_id'] for s in batch['data_samples']]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--iters', type=int, default=60, help='iterations already trained (batches to skip)')
    p.add_argument('--images', type=int, default=60, help='synthetic train images (long side 800-1024)')
    p.add_argument('--workers', type=int, default=2, help='DataLoader workers (the config has 2 per GPU)')
    p.add_argument('--late-iters', type=int, default=150_000, help='a resume late in a real schedule')
    p.add_argument('--work-dir', help='scratch folder (default: a temporary one, removed)')
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=a.work_dir) as root:
        t = time.perf_counter()
        make_dataset(root, a.images)
        print(f'synthetic set: {a.images} images in {time.perf_counter() - t:.0f} s', flush=True)
        fetch_s, fetched = first_batch_after(root, a.workers, a.iters, skip=False)
        skip_s, skipped = first_batch_after(root, a.workers, a.iters, skip=True)
        assert fetched == skipped, f'different batches after {a.iters} iterations: {fetched} vs {skipped}'
        batch_sampler = build_dataloader(root, 0).batch_sampler
        t = time.perf_counter()
        batch_sampler.skip(a.late_iters)
        next(iter(batch_sampler))
        late_skip_s = time.perf_counter() - t
    per_batch = fetch_s / (a.iters + 1)
    late_fetch_s = per_batch * a.late_iters
    print(f'resume at iteration {a.iters}: to the first batch, mmengine fetch {fetch_s:.2f} s, batch-sampler '
          f'skip {skip_s:.2f} s; same batch {fetched}')
    print(f'resume at iteration {a.late_iters:,}: batch-sampler skip {late_skip_s:.1f} s (indices only); mmengine '
          f'fetch ~{late_fetch_s / 3600:.1f} h ({per_batch * 1e3:.0f} ms per batch measured above, {a.workers} workers)')
    print(f'fetch_s_per_1k_iters={per_batch * 1000:.1f} skip_s_at_late_iter={late_skip_s:.1f} '
          f'resume_speedup_at_late_iter={(late_fetch_s + per_batch) / (late_skip_s + per_batch):.0f}')


if __name__ == '__main__':
    main()
