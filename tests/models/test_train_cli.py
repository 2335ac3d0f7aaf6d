"""tools/train.py and tools/test.py as a user runs them: train, checkpoint, resume, predict from it."""
import os
import pickle
import re
import socket

import pytest
import torch
from conftest import TINY_LEAF, run_cli

from util.data.annotations import load_annotations

pytestmark = pytest.mark.slow


def data_options(root):
    # One data_root moves the train, val and test datasets and the evaluators (mmdet_ext.launch).
    return ['--cfg-options', f'data_root={root}/', 'train_dataloader.dataset.index_file=None',
            'default_hooks.logger.interval=1']


def train_options(root):
    return data_options(root)


def test_train_checkpoint_resume_and_test(synthetic_data, tmp_path):
    work = tmp_path / 'work'
    # --amp on a machine without CUDA: the fp16 wrapper falls back to fp32 instead of refusing to start.
    first = run_cli(['tools/train.py', TINY_LEAF, '--work-dir', str(work), '--amp',
                     *train_options(synthetic_data), 'train_cfg.max_iters=4', 'train_cfg.val_interval=4',
                     'default_hooks.checkpoint.interval=2'])
    assert 'AmpOptimWrapper (fp16) replaced by OptimWrapper' in first.stderr + first.stdout
    # Validation with the challenge metric on the held-out images at the end of the schedule.
    assert re.search(r'Iter\(val\) \[\d+/\d+\].*oid/mAP@0.5IOU: [0-9.]+', first.stdout)
    assert (work / 'iter_4.pth').is_file()

    # mmengine 0.10.7 saves objects torch >= 2.6 refuses to load by default; our loader is what resumes.
    with pytest.raises(Exception):
        torch.load(work / 'iter_4.pth')

    second = run_cli(['tools/train.py', TINY_LEAF, '--work-dir', str(work), '--resume',
                      *train_options(synthetic_data), 'train_cfg.max_iters=6', 'train_cfg.val_interval=100',
                      'default_hooks.checkpoint.interval=2'])
    log = second.stdout + second.stderr
    assert 'resumed epoch: 0, iter: 4' in log
    assert 'Iter(train) [5/6]' in log and 'Iter(train) [1/6]' not in log
    ckpt = torch.load(work / 'iter_6.pth', weights_only=False, map_location='cpu')
    assert ckpt['meta']['iter'] == 6
    assert not torch.equal(ckpt['state_dict']['roi_head.bbox_head.0.fc_cls.weight'],
                           torch.load(work / 'iter_4.pth', weights_only=False)['state_dict'][
                               'roi_head.bbox_head.0.fc_cls.weight'])

    # load_from path: tools/test.py predicts the held-out images from the checkpoint and dumps them.
    out = tmp_path / 'preds.pkl'
    test = run_cli(['tools/test.py', TINY_LEAF, str(work / 'iter_6.pth'), '--work-dir', str(tmp_path / 'test'),
                    '--out', str(out), *data_options(synthetic_data)])
    assert re.search(r'Iter\(test\) \[\d+/\d+\].*oid/mAP@0.5IOU: [0-9.]+', test.stdout)
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    held_out = load_annotations(str(synthetic_data / 'annotations/leaf-val.pkl'))['data_list']
    assert sorted(p['img_id'] for p in preds) == sorted(d['img_id'] for d in held_out)
    for p in preds:
        h, w = p['ori_shape']
        inst = p['pred_instances']
        n = len(inst['scores'])
        assert inst['bboxes'].shape == (n, 4) and inst['labels'].shape == (n,)
        assert len(inst['masks']) == n
        if n:
            assert tuple(inst['masks'][0]['size']) == (h, w)


def test_dist_train_two_processes_on_cpu(synthetic_data, tmp_path):
    """tools/dist_train.sh (torchrun) with 2 processes: gloo and CPU DDP instead of a crash."""
    import subprocess
    import sys

    from conftest import REPO
    with socket.socket() as s:                  # a port nobody else on the machine is using
        s.bind(('127.0.0.1', 0))
        port = str(s.getsockname()[1])
    env = dict(os.environ, PYTHON=sys.executable, PYTHONWARNINGS='ignore', MASTER_PORT=port)
    proc = subprocess.run(
        ['tools/dist_train.sh', TINY_LEAF, '2', '--work-dir', str(tmp_path), *train_options(synthetic_data),
         'train_cfg.max_iters=2', 'train_cfg.val_interval=100', 'default_hooks.checkpoint.interval=2'],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "distributed backend 'nccl' replaced by 'gloo'" in log
    assert 'Distributed training: True' in log and 'GPU number: 2' in log   # mmengine's name for the world size
    assert 'terminate called' not in log          # the process group is closed before exit, not left to abort
    assert (tmp_path / 'iter_2.pth').is_file()

    # Resumed by 2 processes: each rank's batch sampler skips its own 2 trained batches.
    proc = subprocess.run(
        ['tools/dist_train.sh', TINY_LEAF, '2', '--work-dir', str(tmp_path), '--resume',
         *train_options(synthetic_data), 'train_cfg.max_iters=3', 'train_cfg.val_interval=100',
         'default_hooks.checkpoint.interval=3'],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert 'resume: the batch sampler skips the 2 batches already trained on' in log
    assert 'terminate called' not in log
    assert torch.load(tmp_path / 'iter_3.pth', map_location='cpu', weights_only=False)['meta']['iter'] == 3

    # The same checkpoint evaluated by 2 processes that split the validation images.
    out = tmp_path / 'preds.pkl'
    proc = subprocess.run(
        ['tools/dist_test.sh', TINY_LEAF, str(tmp_path / 'iter_2.pth'), '2', '--work-dir', str(tmp_path / 'test'),
         '--out', str(out), *data_options(synthetic_data)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert 'terminate called' not in log
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    held_out = load_annotations(str(synthetic_data / 'annotations/leaf-val.pkl'))['data_list']
    assert sorted(p['img_id'] for p in preds) == sorted(d['img_id'] for d in held_out)
