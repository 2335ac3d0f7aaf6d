"""Every config loads, and the models of the real configs build on CPU with the subset's class count."""
import glob
import os
import re
import shutil
import warnings

import pytest
import torch
from conftest import REPO

from mmdet_ext.device import apply_device_defaults
from mmdet_ext.launch import load_config, resolve_checkpoint
from util.common.errors import DataError

CONFIGS = sorted(p for folder in ('oid', 'tiny') for p in glob.glob(os.path.join(REPO, 'configs', folder, '*.py')))
MODEL_CONFIGS = [p for p in CONFIGS if '_stage' not in p]


def expected_classes(path):
    name = os.path.basename(path)
    if '_expert' in name:
        return None             # the class count of its subset file, set by --cfg-options (see the config)
    return 23 if 'parent' in name else 275


def kind(path):
    """'cascade' (OIDCascadeRoIHead or its federated twin), 'mask-rcnn' (StandardRoIHead) or 'single-stage'."""
    name = os.path.basename(path)
    return 'mask-rcnn' if name.startswith('mask-rcnn') else 'single-stage' if name.startswith('rtmdet') \
        else 'cascade'


def config_classes(cfg):
    head = cfg.model.get('roi_head')
    if head is None:
        return cfg.model.bbox_head.num_classes
    if 'num_classes' in head:
        return head.num_classes
    return head.bbox_head.num_classes


@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_config_loads_with_plugins(path):
    cfg = load_config(path)
    assert 'mmdet_ext' in cfg.custom_imports['imports']
    head = {'cascade': ('FederatedCascadeRoIHead' if '_federated' in path else 'OIDCascadeRoIHead'),
            'mask-rcnn': 'StandardRoIHead', 'single-stage': None}[kind(path)]
    assert cfg.model.get('roi_head', {}).get('type') == head
    if expected_classes(path) is not None:
        assert config_classes(cfg) == expected_classes(path)
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
    n = expected_classes(path) or config_classes(cfg)
    background = 0 if '_federated' in path else 1       # sigmoid classification has no background logit
    if kind(path) == 'cascade':
        assert [h.num_classes for h in model.roi_head.bbox_head] == [n] * 3
        assert [h.num_classes for h in model.roi_head.mask_head] == [n] * 3
        assert model.roi_head.bbox_head[0].fc_cls.out_features == n + background
    elif kind(path) == 'mask-rcnn':
        assert model.roi_head.bbox_head.num_classes == model.roi_head.mask_head.num_classes == n
        assert model.roi_head.bbox_head.fc_cls.out_features == n + 1
    else:
        assert model.bbox_head.num_classes == n
    if 'dconv' in path:
        from mmcv.ops import DeformConv2dPack, ModulatedDeformConv2dPack
        assert any(isinstance(m, (DeformConv2dPack, ModulatedDeformConv2dPack)) for m in model.modules())


STAGE_CONFIGS = [p for p in CONFIGS if '_stage' in p]


def lrs_per_iteration(cfg) -> set[float]:
    """Every learning rate the config's schedule gives the optimizer over the whole run: mmengine's own
    schedulers stepped once per iteration, on an SGD optimizer built with the config's lr."""
    from mmengine.registry import PARAM_SCHEDULERS
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.optim_wrapper.optimizer.lr)
    schedulers = [PARAM_SCHEDULERS.build(dict(s), default_args=dict(optimizer=opt))
                  for s in cfg.param_scheduler]
    seen = set()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')         # "scheduler.step() before optimizer.step()": no training here
        for _ in range(cfg.train_cfg.max_iters):
            seen.add(round(opt.param_groups[0]['lr'], 15))
            for s in schedulers:
                s.step()
    return seen


def stage_chain(path):
    """(stage-1 config, previous stage's config, divisor of stage 1's lr) of a stage config."""
    stage = 2 if path.endswith('_stage2.py') else 3
    first = path.replace(f'_stage{stage}.py', '.py')
    return first, (first if stage == 2 else path.replace('_stage3.py', '_stage2.py')), {2: 3, 3: 15}[stage]


def test_there_are_two_stages_of_every_staged_model():
    assert len(STAGE_CONFIGS) == 8 and all(os.path.isfile(stage_chain(p)[1]) for p in STAGE_CONFIGS)


@pytest.mark.parametrize('path', STAGE_CONFIGS, ids=os.path.basename)
def test_stage_lr_is_stage_one_lr_divided_and_starts_from_previous_stage(path):
    first, previous, divisor = stage_chain(path)
    base_lr = load_config(first).optim_wrapper.optimizer.lr
    cfg = load_config(path)
    assert lrs_per_iteration(cfg) == {round(base_lr / divisor, 15)}
    assert cfg.load_from == 'work_dirs/' + os.path.basename(previous)[:-3]
    assert cfg.model.backbone == load_config(first).model.backbone


def test_a_changed_base_lr_moves_every_stage(tmp_path):
    """Edit the base schedule's lr in a copy of configs/: every stage follows."""
    shutil.copytree(os.path.join(REPO, 'configs'), tmp_path / 'configs')
    schedule = tmp_path / 'configs/_base_/schedules/oid-iter.py'
    text = schedule.read_text()
    assert text.count('base_lr = 0.005') == 1
    schedule.write_text(text.replace('base_lr = 0.005', 'base_lr = 0.012'))
    for path in STAGE_CONFIGS:
        copy = str(tmp_path / os.path.relpath(path, REPO))
        first, _, divisor = stage_chain(copy)
        assert load_config(first).optim_wrapper.optimizer.lr == 0.012
        assert lrs_per_iteration(load_config(copy)) == {round(0.012 / divisor, 15)}, path


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
    with pytest.raises(DataError, match='without a last_checkpoint'):
        resolve_checkpoint(str(empty))


def data_roots(cfg) -> dict:
    loaders = {name: cfg[name].dataset.get('dataset', cfg[name].dataset).data_root
               for name in ('train_dataloader', 'val_dataloader', 'test_dataloader')}
    return dict(loaders, val_evaluator=cfg.val_evaluator.data_root,
                test_evaluator=cfg.test_evaluator.data_root)


@pytest.mark.parametrize('name', ['tiny/cascade-mask-rcnn_r18-tiny_fpn_oid-leaf.py',
                                  'oid/cascade-mask-rcnn_x101-64x4d_fpn_oid-parent_stage3.py',
                                  'oid/cascade-mask-rcnn_x101-64x4d_fpn_oid-leaf_class-balanced.py'])
def test_one_data_root_override_moves_every_dataset_and_evaluator(name):
    path = os.path.join(REPO, 'configs', name)
    before = data_roots(load_config(path))
    assert len(set(before.values())) == 1          # all read the one data_root variable
    cfg = load_config(path, ['data_root=/elsewhere/oid/'])
    assert cfg.data_root == '/elsewhere/oid/'
    assert data_roots(cfg) == dict.fromkeys(before, '/elsewhere/oid/')
    # An explicit key still wins over the variable, in either order on the command line.
    for options in (['data_root=/a/', 'val_dataloader.dataset.data_root=/b/'],
                    ['val_dataloader.dataset.data_root=/b/', 'data_root=/a/']):
        roots = data_roots(load_config(path, options))
        assert roots.pop('val_dataloader') == '/b/' and set(roots.values()) == {'/a/'}


@pytest.mark.parametrize('options,message', [
    (['train_cfg.max_iters'], "--cfg-options 'train_cfg.max_iters': expected key=value"),
    (['=3'], "--cfg-options '=3': expected key=value"),
    (['param_scheduler.1.milestones=[1,2'], "--cfg-options 'param_scheduler.1.milestones=[1,2': Imbalanced"),
])
def test_bad_cfg_options_are_data_errors(options, message):
    with pytest.raises(DataError, match=re.escape(message)):
        load_config(os.path.join(REPO, 'configs/tiny/cascade-mask-rcnn_r18-tiny_fpn_oid-leaf.py'), options)
    with pytest.raises(DataError, match='nope.py: config file not found'):
        load_config('nope.py')
