"""Mask probabilities of the boxes -> binary masks at original image size.

The same pasting as mmdet's ``FCNMaskHead`` (its ``_do_paste_mask``: bilinear sampling of the 28 x 28
map inside the box), for one probability map per box that the ensemble has already averaged. On CPU each
box is pasted into its own bounding region (mmdet's CPU fast path); on GPU boxes are pasted in chunks
that bound the memory of the full-image sampling grid.
"""
from __future__ import annotations

import numpy as np
import torch
from mmdet.models.roi_heads.mask_heads.fcn_mask_head import BYTES_PER_FLOAT, GPU_MEM_LIMIT, _do_paste_mask


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
