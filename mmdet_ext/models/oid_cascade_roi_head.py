"""Cascade RoI head whose class count is one argument.

mmengine config inheritance replaces lists, so changing ``num_classes`` of a cascade's three bbox heads
means writing all three out again. ``OIDCascadeRoIHead(num_classes=N)`` sets it on every bbox and mask head,
so leaf (275) and parent (23) configs differ by one line.
"""
from __future__ import annotations

import copy

from mmdet.models.roi_heads import CascadeRoIHead
from mmdet.registry import MODELS


def _with_num_classes(head_cfg, num_classes):
    if head_cfg is None:
        return None
    if isinstance(head_cfg, (list, tuple)):
        return [_with_num_classes(h, num_classes) for h in head_cfg]
    head_cfg = copy.deepcopy(head_cfg)
    head_cfg['num_classes'] = num_classes
    return head_cfg


@MODELS.register_module()
class OIDCascadeRoIHead(CascadeRoIHead):

    def __init__(self, *args, num_classes: int | None = None, bbox_head=None, mask_head=None, **kwargs):
        if num_classes is not None:
            bbox_head = _with_num_classes(bbox_head, num_classes)
            mask_head = _with_num_classes(mask_head, num_classes)
        super().__init__(*args, bbox_head=bbox_head, mask_head=mask_head, **kwargs)
