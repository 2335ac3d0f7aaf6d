"""Resuming trains on exactly the batches the uninterrupted run would have, without re-reading the skipped ones.

Real runners on the slim config: one run of 6 iterations, one of 3 resumed to 6; a hook records the images
of every training batch and a pipeline step counts the training images read from disk."""
import gc

import pytest
from conftest import TINY_LEAF, run_cli
from mmdet.registry import TRANSFORMS
from mmengine.dataset import DefaultSampler, InfiniteSampler
from mmengine.hooks import Hook
from mmengine.registry import DefaultScope

from mmdet_ext.launch import build_runner, load_config, prepare_train_config
from mmdet_ext.samplers import ResumableAspectRatioBatchSampler

pytestmark = pytest.mark.slow

LOADS = []


@TRANSFORMS.register_module(force=True)
class CountTrainingLoads:
    """Pipeline step right after LoadImageFromFile: one entry per training image read."""

    def __call__(self, results):
        LOADS.append(results['img_id'])
        return results


class RecordBatches(Hook):
    def __init__(self):
        self.batches = {}

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.batches[runner.iter + 1] = [s.metainfo['img_id'] for s in data_batch['data_samples']]


@pytest.fixture(scope='module')
def index_file(synthetic_data):
    """The reference's banded list (with repeats), so the stream is not just the file's order."""
    out = synthetic_data / 'annotations/leaf-train-balanced.npy'
    if not out.exists():
        run_cli(['-m', 'util.data.rebalance', str(synthetic_data / 'annotations/leaf-train.pkl'), '--out', str(out)])
    return out


def train(root, index_file, work, max_iters, workers, resume=None):
    cfg = load_config(TINY_LEAF, {
        'train_dataloader.num_workers': workers, 'train_dataloader.persistent_workers': workers > 0,
        'train_dataloader.dataset.data_root': f'{root}/', 'train_dataloader.dataset.index_file': str(index_file),
        'val_dataloader.dataset.data_root': f'{root}/', 'val_evaluator.data_root': f'{root}/',
        'train_cfg.max_iters': max_iters, 'train_cfg.val_interval': 100,
        'default_hooks.checkpoint.interval': 3, 'default_hooks.logger.interval': 1,
        'randomness.seed': 0,
    }, str(work))
    cfg.train_dataloader.dataset.pipeline.insert(1, dict(type='CountTrainingLoads'))
    cfg = prepare_train_config(cfg, resume)
    with DefaultScope.overwrite_default_scope('mmdet'):
        runner = build_runner(cfg)
        recorder = RecordBatches()
        runner.register_hook(recorder)
        LOADS.clear()
        runner.train()
    batch_sampler = runner.train_dataloader.batch_sampler
    del runner                      # and with it the DataLoader's worker processes
    gc.collect()
    return recorder.batches, list(LOADS), batch_sampler


@pytest.mark.parametrize('workers', [0, 2])
def test_resume_continues_the_batch_stream_without_reading_skipped_images(synthetic_data, index_file, tmp_path,
                                                                          workers):
    """With 2 workers the DataLoader's first iterator prefetches from the stream before the resume."""
    straight, _, _ = train(synthetic_data, index_file, tmp_path / 'straight', 6, workers)
    train(synthetic_data, index_file, tmp_path / 'resumed', 3, workers)
    resumed, loads, batch_sampler = train(synthetic_data, index_file, tmp_path / 'resumed', 6, workers,
                                   resume=str(tmp_path / 'resumed/iter_3.pth'))

    assert isinstance(batch_sampler, ResumableAspectRatioBatchSampler)
    assert isinstance(batch_sampler.sampler, InfiniteSampler)
    assert sorted(straight) == [1, 2, 3, 4, 5, 6] and sorted(resumed) == [4, 5, 6]
    assert resumed == {i: straight[i] for i in (4, 5, 6)}
    if workers == 0:   # (workers load in their own processes)
        # Only the trained batches' images were read, none of batches 1-3.
        assert sorted(loads) == sorted(img for i in (4, 5, 6) for img in straight[i])


def test_skip_restarts_the_stream_and_replays_the_grouping(synthetic_data, index_file):
    """Batch sampler alone: skip(k) then iterate == batches k.. of a fresh stream, across several passes
    over the list, even after an earlier iterator advanced (and left images in the buckets)."""
    from mmdet_ext.datasets import OIDInstanceDataset
    dataset = OIDInstanceDataset(ann_file=str(synthetic_data / 'annotations/leaf-train.pkl'),
                                 index_file=str(index_file), pipeline=[])
    dataset.full_init()

    def batches(batch_sampler, n):
        it = iter(batch_sampler)
        return [next(it) for _ in range(n)]

    def fresh():
        return ResumableAspectRatioBatchSampler(InfiniteSampler(dataset, shuffle=True, seed=3), batch_size=3)

    n = 160
    reference = batches(fresh(), n)
    assert len(dataset) < n * 3                 # the comparison crosses passes over the list
    for k in (0, 1, 7, 150):
        bs = fresh()
        batches(bs, 5)                          # the DataLoader's first iterator prefetched some batches
        assert bs.skip(k)
        assert batches(bs, n - k) == reference[k:]
    # A stream that is not InfiniteSampler's cannot be replayed from its start: skip declines, so the
    # loop keeps mmengine's fast-forward.
    epoch_based = ResumableAspectRatioBatchSampler(DefaultSampler(dataset, shuffle=True, seed=3), batch_size=3)
    assert not epoch_based.skip(7)
    assert batches(epoch_based, 4) == batches(
        ResumableAspectRatioBatchSampler(DefaultSampler(dataset, shuffle=True, seed=3), batch_size=3), 4)
