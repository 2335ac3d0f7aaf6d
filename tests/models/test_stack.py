"""The compiled mmcv ops this project relies on run forward and backward on CPU."""
import torch
from mmcv.ops import ModulatedDeformConv2d, RoIAlign, nms


def test_roi_align_forward_backward():
    feats = torch.rand(1, 4, 16, 16, requires_grad=True)
    rois = torch.tensor([[0, 1.0, 1.0, 9.0, 9.0], [0, 4.0, 2.0, 15.0, 12.0]])
    out = RoIAlign(output_size=7, spatial_scale=1.0, sampling_ratio=2)(feats, rois)
    assert out.shape == (2, 4, 7, 7)
    out.sum().backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    # A RoI over a constant feature map pools that constant.
    const = torch.full((1, 1, 8, 8), 3.0)
    pooled = RoIAlign(output_size=2, spatial_scale=1.0, sampling_ratio=2)(const, rois[:1] * 0.5)
    assert torch.allclose(pooled, torch.full_like(pooled, 3.0))


def test_nms_suppresses_overlaps_only():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    assert dets.shape == (2, 5)


def test_modulated_deform_conv_forward_backward():
    torch.manual_seed(0)
    conv = ModulatedDeformConv2d(4, 8, kernel_size=3, padding=1, deform_groups=1)
    x = torch.rand(1, 4, 10, 10, requires_grad=True)
    offset = torch.zeros(1, 18, 10, 10)
    mask = torch.ones(1, 9, 10, 10)
    y = conv(x, offset, mask)
    assert y.shape == (1, 8, 10, 10)
    # Zero offsets and unit modulation make it an ordinary convolution.
    ref = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1)
    assert torch.allclose(y, ref, atol=1e-5)
    y.sum().backward()
    assert x.grad.abs().sum() > 0 and conv.weight.grad.abs().sum() > 0
