"""Mask probabilities of the boxes -> binary masks at original image size.

The same pasting as mmdet's ``FCNMaskHead`` (its ``_do_paste_mask``: bilinear sampling of the 28 x 28
map inside the box), for one probability map per box that the ensemble has already averaged; ``paste_crops``
keeps each pasted mask as its region, for ``util.common.mask_codec.encode_region``. On CPU each
box is pasted into its own bounding region (mmdet's CPU fast path); on GPU boxes are pasted in chunks
that bound the memory of the full-image sampling grid.
"""
from __future__ import annotations

import numpy as np
import torch
from mmdet.models.roi_heads.mask_heads.fcn_mask_head import (
    BYTES_PER_FLOAT,
    GPU_MEM_LIMIT,
    _do_paste_mask,
)


def paste_masks(probs: torch.Tensor, boxes: torch.Tensor, height: int, width: int,
                threshold: float = 0.5) -> torch.Tensor:
    """``probs`` N x h x w in [0, 1], ``boxes`` N x 4 (original pixels) -> N x height x width bool."""
    n = len(probs)
    device = probs.device
    masks = torch.zeros(n, height, width, dtype=torch.bool, device=device)
    if n == 0:
        return masks
    if device.type == 'cpu':
        num_chunks = n
    else:
        num_chunks = int(np.ceil(n * height * width * BYTES_PER_FLOAT / GPU_MEM_LIMIT))
    for inds in torch.chunk(torch.arange(n, device=device), min(num_chunks, n)):
        pasted, region = _do_paste_mask(probs[inds, None], boxes[inds], height, width,
                                        skip_empty=device.type == 'cpu')
        masks[(inds, ) + region] = pasted >= threshold
    return masks


def paste_crops(probs: torch.Tensor, boxes: torch.Tensor, height: int, width: int,
                threshold: float = 0.5) -> list[tuple[np.ndarray, int, int]]:
    """As ``paste_masks`` on the CPU, but each mask kept as its pasted region: (bool crop, y0, x0). The
    same pixels, without the N full-size masks (120 x 1024 x 768 bytes) that encoding would scan."""
    probs, boxes = probs.detach().float().cpu(), boxes.detach().float().cpu()
    out = []
    for i in range(len(probs)):
        pasted, (ys, xs) = _do_paste_mask(probs[i:i + 1, None], boxes[i:i + 1], height, width, skip_empty=True)
        out.append(((pasted[0] >= threshold).numpy(), int(ys.start), int(xs.start)))
    return out


def class_mask_logits(mask_head: torch.nn.Module, mask_feats: torch.Tensor,
                      labels: torch.Tensor) -> torch.Tensor:
    """``FCNMaskHead.forward`` evaluated only at each box's own class: N x 28 x 28 logits.

    The head's last layer is a 1 x 1 convolution with one output channel per class (275 for the leaf
    model); the ensemble needs one channel per box, so that layer is applied as a per-box dot product
    instead of computing every class and discarding all but one. Heads of another shape run in full.
    """
    conv = mask_head.conv_logits
    rows = torch.arange(len(labels), device=labels.device)
    if not isinstance(conv, torch.nn.Conv2d) or conv.kernel_size != (1, 1) or conv.groups != 1:
        logits = mask_head(mask_feats)
        return logits[rows, labels if logits.shape[1] > 1 else torch.zeros_like(labels)]
    x = mask_feats
    for layer in mask_head.convs:
        x = layer(x)
    if mask_head.upsample is not None:
        x = mask_head.upsample(x)
        if mask_head.upsample_method == 'deconv':
            x = mask_head.relu(x)
    channel = labels if conv.out_channels > 1 else torch.zeros_like(labels)
    weight = conv.weight[channel, :, 0, 0]                       # N x C
    logits = torch.einsum('nchw,nc->nhw', x, weight)
    if conv.bias is not None:
        logits = logits + conv.bias[channel][:, None, None]
    return logits
