"""The three rebalancing choices of the leaf configs build and feed batches from a generated dataset."""
import numpy as np
import pytest
from conftest import REPO, run_cli
from mmengine.runner import Runner

import mmdet_ext  # noqa: F401
from mmdet_ext.launch import load_config

VARIANTS = ['', '_class-balanced', '_class-aware']


@pytest.fixture(scope='module')
def balanced_index(synthetic_data):
    out = synthetic_data / 'annotations/leaf-train-balanced.npy'
    if not out.exists():
        run_cli(['-m', 'util.data.rebalance', str(synthetic_data / 'annotations/leaf-train.pkl'), '--out', str(out),
                 '--rounds', '2'])
    return out


@pytest.mark.parametrize('variant', VARIANTS)
def test_train_dataloader_of_each_rebalancing_choice(variant, synthetic_data, balanced_index):
    cfg = load_config(f'{REPO}/configs/oid/cascade-mask-rcnn_x101-64x4d_fpn_oid-leaf{variant}.py')
    loader_cfg = cfg.train_dataloader
    loader_cfg.num_workers, loader_cfg.persistent_workers = 0, False
    inner = loader_cfg.dataset.get('dataset', loader_cfg.dataset)
    inner.data_root = f'{synthetic_data}/'
    inner.pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                      dict(type='Resize', scale=(128, 128), keep_ratio=True), dict(type='PackDetInputs')]
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        loader = Runner.build_dataloader(loader_cfg, seed=0)
        batches = [b for _, b in zip(range(3), loader)]
    assert all(len(b['data_samples']) == 1 for b in batches)
    assert all(len(b['data_samples'][0].gt_instances) > 0 for b in batches)
    if variant == '':
        # The epoch is the rebalanced list, read in order: len(dataset) is the list's length.
        index = np.load(balanced_index)
        assert len(loader.dataset) == len(index)
        first = loader.dataset.get_data_info(0)['img_id']
        assert batches[0]['data_samples'][0].img_id == first
