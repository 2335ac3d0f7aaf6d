"""Ensemble members: a detector, its weight, and where its classes sit in the ensemble's class list.

A *class-subset expert* (say, fine-tuned on the rarest leaf classes) predicts fewer classes than the
ensemble; ``class_index[j]`` says which ensemble class its class j is. Every per-class average of a fusion
then runs over the members that predict that class, their weights renormalised per class
(``ClassMap.class_weights``), so an expert changes the scores of its own classes only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


@dataclass
class Member:
    model: torch.nn.Module
    weight: float = 1.0
    class_index: list[int] | None = None    # ensemble class of each model class; None: the same list
    name: str = ''

    def label(self, i: int) -> str:
        return self.name or f'member {i} ({type(self.model).__name__})'


def model_num_classes(model: torch.nn.Module) -> int:
    """How many classes a detector predicts: its (last) RoI bbox head's, its dense head's, or a query
    head's count of thing classes."""
    roi_head = getattr(model, 'roi_head', None)
    if roi_head is not None and getattr(roi_head, 'bbox_head', None) is not None:
        head = roi_head.bbox_head
        head = head[-1] if isinstance(head, (torch.nn.ModuleList, list, tuple)) else head
        return int(head.num_classes)
    for attr in ('bbox_head', 'mask_head'):
        head = getattr(model, attr, None)
        if head is not None and hasattr(head, 'num_classes'):
            return int(head.num_classes)
    head = getattr(model, 'panoptic_head', None)
    if head is not None and hasattr(head, 'num_things_classes'):
        return int(head.num_things_classes)
    raise ValueError(f'cannot tell how many classes {type(model).__name__} predicts')


class ClassMap:
    """The members' class lists against the ensemble's ``num_classes`` classes.

    ``index[k]``: the ensemble class of each class of member k (int64 array); ``local[k]``: the inverse,
    one entry per ensemble class, -1 where member k does not predict it; ``identity``: every member predicts
    exactly the ensemble's classes in order (then fusions run the plain, unrenormalised averages).
    """

    def __init__(self, members: Sequence[Member], num_classes: int):
        self.num_classes = int(num_classes)
        self.index, self.local = [], []
        for i, m in enumerate(members):
            own = model_num_classes(m.model)
            if m.class_index is None:
                if own != self.num_classes:
                    raise ValueError(f'{m.label(i)} predicts {own} classes, the ensemble {self.num_classes}: '
                                     'give its class_index (the ensemble class of each of its classes)')
                index = np.arange(own, dtype=np.int64)
            else:
                index = np.asarray(m.class_index, dtype=np.int64).reshape(-1)
                if len(index) != own:
                    raise ValueError(f'{m.label(i)}: class_index has {len(index)} entries for {own} classes')
                if len(index) and (index.min() < 0 or index.max() >= self.num_classes):
                    raise ValueError(f'{m.label(i)}: class_index outside the ensemble\'s {self.num_classes} '
                                     'classes')
                if len(np.unique(index)) != len(index):
                    raise ValueError(f'{m.label(i)}: class_index names an ensemble class twice')
            local = np.full(self.num_classes, -1, dtype=np.int64)
            local[index] = np.arange(len(index))
            self.index.append(index)
            self.local.append(local)
        self.identity = all(m.class_index is None for m in members)

    @classmethod
    def full(cls, num_classes: int, members: int) -> ClassMap:
        """The map of ``members`` members that all predict every class, without their models."""
        out = cls.__new__(cls)
        out.num_classes, out.identity = int(num_classes), True
        out.index = [np.arange(num_classes, dtype=np.int64) for _ in range(members)]
        out.local = [np.arange(num_classes, dtype=np.int64) for _ in range(members)]
        return out

    def covers(self) -> np.ndarray:
        """K x C bool: member k predicts ensemble class c."""
        return np.stack([loc >= 0 for loc in self.local])

    def class_weights(self, weights: Sequence[float]) -> np.ndarray:
        """K x C: each member's share in the average of class c (columns sum to 1, or 0 where no member
        with a positive weight predicts c)."""
        w = self.covers() * np.asarray(weights, dtype=np.float64)[:, None]
        total = w.sum(0, keepdims=True)
        return np.divide(w, total, out=np.zeros_like(w), where=total > 0)


def check_weights(members: Sequence[Member]) -> list[float]:
    weights = [float(m.weight) for m in members]
    if not members:
        raise ValueError('an ensemble needs at least one member')
    if min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f'member weights must be non-negative with a positive sum, got {weights}')
    return weights


def default_test_settings(model: torch.nn.Module) -> dict:
    """score_thr, iou_thr, max_per_img, mask_thr of a model's test_cfg: ``test_cfg.rcnn`` of two-stage
    detectors, ``test_cfg`` itself of single-stage ones (the defaults of every fusion)."""
    cfg = model.test_cfg
    cfg = cfg.get('rcnn', cfg) if hasattr(cfg, 'get') else cfg
    nms = cfg.get('nms', None) or {}
    out = dict(score_thr=cfg.get('score_thr', 0.0), iou_thr=nms.get('iou_threshold', cfg.get('iou_thr', None)),
               max_per_img=cfg.get('max_per_img', cfg.get('max_per_image', None)),
               mask_thr=cfg.get('mask_thr_binary', cfg.get('mask_thr', 0.5)))
    missing = [k for k, v in out.items() if v is None]
    if missing:
        raise ValueError(f'the first member\'s test_cfg gives no {", ".join(missing)}: set them in the '
                         'ensemble\'s test settings')
    return out
