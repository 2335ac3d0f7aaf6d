"""One shared proposal set from the RPN proposals of every view.

Each view's RPN has already run its own NMS (mmdet 3 suppresses per pyramid level, so a view's set can
hold overlapping boxes from two levels). Merging has one job: remove the duplicates that different views
propose for the same object. So, by default, a proposal is dropped only when a higher-scored proposal of
ANOTHER view overlaps it by more than ``iou_thr``; a view's own set is never pruned again, and an
ensemble of one view, or of a model with itself, keeps exactly that model's proposals.
``within_views=True`` is plain NMS over the union instead (what mmdetection v1's aug test did).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from mmcv.ops import nms


def _iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU without the +1 pixel offset, as mmcv's nms computes it."""
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, np.finfo(np.float32).eps)


def cross_view_nms(boxes: np.ndarray, scores: np.ndarray, view_ids: np.ndarray, iou_thr: float,
                   max_num: int) -> np.ndarray:
    """Greedy NMS in which a kept box suppresses only boxes of other views; indices of the kept boxes,
    best first. Ties in score keep the input order (stable sort), so the result is deterministic."""
    order = np.argsort(-scores, kind='stable')
    boxes, view_ids = boxes[order], view_ids[order]
    suppressed = np.zeros(len(order), bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) == max_num:
            break
        rest = slice(i + 1, None)
        overlap = _iou_one_to_many(boxes[i], boxes[rest]) > iou_thr
        suppressed[rest] |= overlap & (view_ids[rest] != view_ids[i])
    return order[np.asarray(keep, np.int64)]


def merge_proposals(boxes: Sequence[torch.Tensor], scores: Sequence[torch.Tensor], iou_thr: float = 0.7,
                    max_num: int = 1000, within_views: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-view proposals (original-image boxes N_v x 4, scores N_v) -> (boxes K x 4, scores K),
    best first."""
    all_boxes, all_scores = torch.cat(list(boxes)), torch.cat(list(scores))
    if len(all_boxes) == 0:
        return all_boxes, all_scores
    if within_views:
        _, keep = nms(all_boxes, all_scores, iou_thr)
        keep = keep[:max_num]
    else:
        view_ids = np.repeat(np.arange(len(boxes)), [len(b) for b in boxes])
        keep = cross_view_nms(all_boxes.detach().float().cpu().numpy(),
                              all_scores.detach().float().cpu().numpy(), view_ids, iou_thr, max_num)
        keep = torch.from_numpy(keep).to(all_boxes.device)
    return all_boxes[keep], all_scores[keep]
