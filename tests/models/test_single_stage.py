"""The slim single-stage config (RTMDet-Ins): builds, predicts full-size masks through ``model.predict``
and trains on the synthetic data through tools/train.py on CPU."""
import numpy as np
import pytest
import torch
from conftest import run_cli

from mmdet_ext.launch import load_config

TINY_RTMDET = 'configs/tiny/rtmdet-ins_tiny_oid-leaf.py'


def detector(checkpoint=None, seed=0):
    from mmdet.apis import init_detector
    torch.manual_seed(seed)
    return init_detector(load_config(TINY_RTMDET), checkpoint=checkpoint, device='cpu')


def predict(model, img):
    from mmdet.apis import inference_detector
    return inference_detector(model, img).pred_instances


def test_single_stage_architecture_and_mask_prediction():
    model = detector()
    assert type(model).__name__ == 'RTMDet' and type(model.bbox_head).__name__ == 'RTMDetInsSepBNHead'
    assert model.bbox_head.num_classes == 275 and model.test_cfg.max_per_img == 30
    assert not any('SyncBatchNorm' in type(m).__name__ for m in model.modules())   # one CPU process
    img = np.random.default_rng(0).integers(0, 255, (150, 230, 3), dtype=np.uint8)
    # Untrained box distances decode to zero-height boxes, which min_bbox_size 0 drops: keep them here to
    # check shapes on (score_thr is 0, so the top instances come back).
    model.test_cfg.min_bbox_size = -1
    pred = predict(model, img)
    n = len(pred)
    assert 0 < n <= 30
    assert pred.bboxes.shape == (n, 4) and pred.scores.shape == (n,) and int(pred.labels.max()) < 275
    assert pred.masks.shape == (n, 150, 230) and pred.masks.dtype == torch.bool
    assert float(pred.bboxes[:, 2].max()) <= 230 + 1e-3 and float(pred.bboxes[:, 3].max()) <= 150 + 1e-3


@pytest.mark.slow
def test_single_stage_trains_on_cpu_and_its_checkpoint_predicts(synthetic_data, tmp_path):
    work = tmp_path / 'work'
    proc = run_cli(['tools/train.py', TINY_RTMDET, '--work-dir', str(work), '--cfg-options',
                    f'data_root={synthetic_data}/', 'train_dataloader.dataset.index_file=None',
                    'default_hooks.logger.interval=1', 'train_cfg.max_iters=4', 'train_cfg.val_interval=4',
                    'default_hooks.checkpoint.interval=4'], env={'OMP_NUM_THREADS': '1'})
    losses = [float(line.split(' loss: ')[1].split()[0]) for line in proc.stdout.splitlines() + proc.stderr.splitlines()
              if 'Iter(train)' in line and ' loss: ' in line]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert any('loss_mask' in line for line in proc.stdout.splitlines() + proc.stderr.splitlines())
    ckpt = work / 'iter_4.pth'
    assert ckpt.exists()
    trained, fresh = detector(str(ckpt)), detector(seed=0)
    assert not torch.equal(trained.bbox_head.rtm_cls[0].weight, fresh.bbox_head.rtm_cls[0].weight)
    img = np.random.default_rng(1).integers(0, 255, (200, 120, 3), dtype=np.uint8)
    pred = predict(trained, img)
    assert pred.masks.shape[1:] == (200, 120) and 0 < len(pred) <= 30 and pred.masks.dtype == torch.bool
