"""Cascade RoI head for federated training: ignore regions and a per-image federated classification loss.

mmdet's bbox heads call ``loss_cls(cls_score, labels, weights)`` without knowing which image a RoI comes
from, so a loss cannot tell which classes were verified for it. This head reads, per image, the classes
known for it (``verified_classes`` of the data sample's metainfo, from ``OIDInstanceDataset``, plus the
classes of its annotated and ignored instances) and hands the loss a (RoIs x classes) mask of them.
Images without ``verified_classes`` (an older annotation file) count every class as known.

One argument each, for every stage (mmengine replaces lists, so a config would otherwise restate the three
bbox heads and the three stage train configs):
    loss_cls         the bbox heads' classification loss (e.g. ``FederatedSigmoidLoss``)
    ignore_iof_thr   the stages' assigners become ``IgnoringMaxIoUAssigner`` with this IoF threshold:
                     RoIs overlapping a box-only box are neither positives nor background
    cls_prior_prob   sigmoid heads start at this probability per class (the focal-loss bias prior), so
                     the first iterations are not flooded by C negative terms of 0.69 each
"""
from __future__ import annotations

import copy
import math

import torch
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox2roi

from .federated_loss import FederatedSigmoidLoss
from .oid_cascade_roi_head import OIDCascadeRoIHead


def _each(cfg, update):
    """Apply ``update`` to a deep copy of a config or of every config in a list."""
    if cfg is None:
        return None
    if isinstance(cfg, (list, tuple)):
        return [_each(c, update) for c in cfg]
    cfg = copy.deepcopy(cfg)
    update(cfg)
    return cfg


@MODELS.register_module()
class FederatedCascadeRoIHead(OIDCascadeRoIHead):

    def __init__(self, *args, loss_cls=None, ignore_iof_thr: float | None = None, cls_prior_prob: float = 0.01,
                 bbox_head=None, train_cfg=None, **kwargs):
        if loss_cls is not None:
            bbox_head = _each(bbox_head, lambda h: h.__setitem__('loss_cls', copy.deepcopy(loss_cls)))
        if ignore_iof_thr is not None:
            def ignoring(stage_cfg):
                assigner = stage_cfg['assigner']
                if assigner['type'] in ('MaxIoUAssigner', 'IgnoringMaxIoUAssigner'):
                    assigner['type'] = 'IgnoringMaxIoUAssigner'
                assigner['ignore_iof_thr'] = ignore_iof_thr
            train_cfg = _each(train_cfg, ignoring)
        self.cls_prior_prob = cls_prior_prob
        self._known = None
        super().__init__(*args, bbox_head=bbox_head, train_cfg=train_cfg, **kwargs)

    def init_weights(self) -> None:
        super().init_weights()
        bias = -math.log((1 - self.cls_prior_prob) / self.cls_prior_prob)
        for head in self.bbox_head:
            if isinstance(head.loss_cls, FederatedSigmoidLoss) and getattr(head.fc_cls, 'bias', None) is not None:
                torch.nn.init.constant_(head.fc_cls.bias, bias)

    # ---- which classes are known per image -----------------------------------------------------------
    def known_classes(self, batch_data_samples) -> torch.Tensor:
        """(images x classes) bool: verified for the image, annotated in it, or (no information) all."""
        num_classes = self.bbox_head[0].num_classes
        rows = []
        for sample in batch_data_samples:
            verified = sample.metainfo.get('verified_classes')
            row = torch.ones(num_classes, dtype=torch.bool)
            if verified is not None:
                row[:] = False
                row[torch.as_tensor(verified, dtype=torch.long)] = True
                for part in (sample.get('gt_instances'), sample.get('ignored_instances')):
                    if part is not None and 'labels' in part and part.labels.numel():
                        row[part.labels.long().cpu()] = True
            rows.append(row)
        return torch.stack(rows) if rows else torch.zeros(0, num_classes, dtype=torch.bool)

    def loss(self, x, rpn_results_list, batch_data_samples) -> dict:
        self._known = self.known_classes(batch_data_samples)
        try:
            return super().loss(x, rpn_results_list, batch_data_samples)
        finally:
            self._known = None

    def bbox_loss(self, stage: int, x, sampling_results: list[SamplingResult]) -> dict:
        """As ``CascadeRoIHead.bbox_loss``, but a federated ``loss_cls`` gets each RoI's known classes."""
        bbox_head = self.bbox_head[stage]
        if not isinstance(bbox_head.loss_cls, FederatedSigmoidLoss) or self._known is None:
            return super().bbox_loss(stage, x, sampling_results)
        rois = bbox2roi([res.priors for res in sampling_results])
        results = self._bbox_forward(stage, x, rois)
        results.update(rois=rois)
        targets = bbox_head.get_targets(sampling_results, self.train_cfg[stage])
        labels, label_weights = targets[0], targets[1]
        losses = bbox_head.loss(None, results['bbox_pred'], rois, *targets)   # box regression only
        cls_score = results['cls_score']
        if cls_score.numel() > 0:
            image_classes = self._known.to(cls_score.device)[rois[:, 0].long()]
            avg_factor = max(float((label_weights > 0).sum()), 1.0)
            losses['loss_cls'] = bbox_head.loss_cls(cls_score, labels, label_weights, avg_factor=avg_factor,
                                                    image_classes=image_classes)
            losses.update(bbox_head.loss_cls.get_accuracy(cls_score, labels))
        results.update(loss_bbox=losses, bbox_targets=targets)
        return results
