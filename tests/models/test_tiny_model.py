"""The slim CPU config keeps the architecture and predicts boxes, scores, labels and full-size masks."""
import numpy as np
import pytest
import torch

from mmdet_ext.launch import load_config

TINY_LEAF = 'configs/tiny/cascade-mask-rcnn_r18-tiny_fpn_oid-leaf.py'


@pytest.fixture(scope='module')
def tiny_model():
    from mmdet.apis import init_detector
    cfg = load_config(TINY_LEAF)
    torch.manual_seed(0)
    return init_detector(cfg, checkpoint=None, device='cpu')


def test_tiny_keeps_cascade_architecture(tiny_model):
    m = tiny_model
    assert type(m).__name__ == 'CascadeRCNN'
    assert type(m.neck).__name__ == 'FPN'
    assert m.roi_head.num_stages == 3
    assert len(m.roi_head.bbox_head) == 3 and len(m.roi_head.mask_head) == 3
    assert all(h.num_classes == 275 for h in m.roi_head.bbox_head)
    assert all(h.num_classes == 275 for h in m.roi_head.mask_head)
    assert m.test_cfg.rcnn.max_per_img == 30


def test_tiny_prediction_shapes(tiny_model):
    from mmdet.apis import inference_detector
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (150, 230, 3), dtype=np.uint8)
    # Untrained heads give near-uniform scores; a low threshold keeps detections to check shapes on.
    tiny_model.test_cfg.rcnn.score_thr = 0.0
    pred = inference_detector(tiny_model, img).pred_instances
    n = len(pred)
    assert 0 < n <= 30
    assert pred.bboxes.shape == (n, 4)
    assert pred.scores.shape == (n,) and pred.labels.shape == (n,)
    assert pred.masks.shape == (n, 150, 230) and pred.masks.dtype == torch.bool
    assert int(pred.labels.max()) < 275
    assert float(pred.bboxes[:, 2].max()) <= 230 + 1e-3 and float(pred.bboxes[:, 3].max()) <= 150 + 1e-3
