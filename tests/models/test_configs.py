"""Every config loads, and the models of the real configs build on CPU with the subset's class count."""
import glob
import os

import pytest
import torch

from conftest import REPO
from mmdet_ext.device import apply_device_defaults
from mmdet_ext.launch import load_config, prepare_train_config, resolve_checkpoint

CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, 'configs/**/*.py'), recursive=True)
                 if '_base_' not in p)
MODEL_CONFIGS = [p for p in CONFIGS if '_stage' not in p]


def expected_classes(path):
    return 23 if 'parent' in os.path.basename(path) else 275


@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_config_loads_with_plugins(path):
    cfg = load_config(path)
    assert 'mmdet_ext' in cfg.custom_imports['imports']
    assert cfg.model.roi_head.type == 'OIDCascadeRoIHead'
    assert cfg.model.roi_head.num_classes == expected_classes(path)
    # Resuming skips trained batches in the batch sampler instead of re-reading their images.
    assert cfg.train_cfg.type == 'ResumableIterBasedTrainLoop'
    assert cfg.train_dataloader.batch_sampler.type == 'ResumableAspectRatioBatchSampler'
    # Every dataloader reads the class subset the model predicts (the metric maps labels through it).
    parent = expected_classes(path) == 23
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cfg[loader].dataset.get('dataset', cfg[loader].dataset)
        assert ('parent' in dataset.ann_file) == parent, (loader, dataset.ann_file)


@pytest.mark.parametrize('path', MODEL_CONFIGS, ids=os.path.basename)
def test_model_builds_on_cpu(path):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = load_config(path)
    model = MODELS.build(cfg.model)
    n = expected_classes(path)
    assert [h.num_classes for h in model.roi_head.bbox_head] == [n] * 3
    assert [h.num_classes for h in model.roi_head.mask_head] == [n] * 3
    assert model.roi_head.bbox_head[0].fc_cls.out_features == n + 1
    if 'dconv' in path:
        from mmcv.ops import ModulatedDeformConv2dPack, DeformConv2dPack
        assert any(isinstance(m, (DeformConv2dPack, ModulatedDeformConv2dPack)) for m in model.modules())


def test_staged_configs_divide_lr_and_start_from_previous_stage():
    base = load_config(os.path.join(REPO, 'configs/oid/cascade-mask-rcnn_x101-64x4d_fpn_oid-leaf.py'))
    s2 = load_config(os.path.join(REPO, 'configs/oid/cascade-mask-rcnn_x101-64x4d_fpn_oid-leaf_stage2.py'))
    s3 = load_config(os.path.join(REPO, 'configs/oid/cascade-mask-rcnn_x101-64x4d_fpn_oid-leaf_stage3.py'))
    lr = base.optim_wrapper.optimizer.lr
    assert s2.optim_wrapper.optimizer.lr == pytest.approx(lr / 3)
    assert s3.optim_wrapper.optimizer.lr == pytest.approx(lr / 15)
    assert s2.load_from.endswith('cascade-mask-rcnn_x101-64x4d_fpn_oid-leaf')
    assert s3.load_from.endswith('cascade-mask-rcnn_x101-64x4d_fpn_oid-leaf_stage2')
    assert s3.model.backbone.type == 'ResNeXt'


def test_reference_recipe():
    cfg = load_config(os.path.join(REPO, 'configs/oid/cascade-mask-rcnn_x101-64x4d_fpn_oid-leaf.py'))
    assert cfg.optim_wrapper.optimizer.lr == 0.005 and cfg.auto_scale_lr.base_batch_size == 4
    assert cfg.optim_wrapper.clip_grad.max_norm == 35
    resize = [t for t in cfg.train_dataloader.dataset.pipeline if t['type'] == 'RandomResize'][0]
    assert resize['scale'] == [(1333, 640), (1333, 960)]
    flip = [t for t in cfg.train_dataloader.dataset.pipeline if t['type'] == 'RandomFlip'][0]
    assert flip['prob'] == 0.5


def test_cpu_fallbacks_for_amp_and_nccl():
    cfg = load_config(os.path.join(REPO, 'configs/oid/cascade-mask-rcnn_x101-64x4d-dconv-c5_fpn_amp_oid-leaf.py'),
                      launcher='pytorch')
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    on_gpu = apply_device_defaults(cfg.copy(), cuda_available=True)
    assert on_gpu.optim_wrapper.type == 'AmpOptimWrapper' and on_gpu.env_cfg.dist_cfg.backend == 'nccl'
    on_cpu = apply_device_defaults(cfg, cuda_available=False)
    assert on_cpu.optim_wrapper.type == 'OptimWrapper' and 'loss_scale' not in on_cpu.optim_wrapper
    assert on_cpu.env_cfg.dist_cfg.backend == 'gloo'
    assert on_cpu.model_wrapper_cfg.device_ids is None


def test_load_from_a_work_dir_resolves_its_last_checkpoint(tmp_path):
    ckpt = tmp_path / 'iter_8.pth'
    ckpt.write_bytes(b'')
    (tmp_path / 'last_checkpoint').write_text(str(ckpt))
    assert resolve_checkpoint(str(tmp_path)) == str(ckpt)
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match='without a last_checkpoint'):
        resolve_checkpoint(str(empty))
