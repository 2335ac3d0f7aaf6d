"""Late fusion: every member x view predicts its own instances; boxes and scores are fused per class,
then each fused instance gets a mask.

1. ``predict_view``   each member x view through the model's own predict path (the view's inputs through
                      its data_preprocessor; mirrored views mapped back), labels mapped into the ensemble's
                      class list. R-CNN members (those ``tta.roi_kind`` accepts) stop after their boxes:
                      their masks come from step 3; every other model (single-stage, query-based, HTC)
                      keeps the masks its ``predict`` returns.
2. box fusion         ``fuse_wbf`` (ensemble-boxes' ``weighted_boxes_fusion``) or ``fuse_nms`` (mmcv's
                      NMS / soft-NMS), per class over the member x views that predict it.
3. ``fuse_masks``     each fused instance: R-CNN members re-segment the fused box in every view (their
                      mean 28 x 28 probabilities, as shared proposals' step 3), other members give the masks
                      of the instances of its cluster (each input instance belongs to the fused box of its
                      label it overlaps most, when the IoU passes the clustering threshold); both kinds
                      averaged, weighted by their member weights, and thresholded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from ensemble_boxes import weighted_boxes_fusion
from mmcv.ops import batched_nms
from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox_overlaps
from mmengine.structures import InstanceData

from .members import (
    ClassMap,
    Member,
    check_weights,
    default_test_settings,
    model_num_classes,
)
from .timing import StageTimer
from .tta import ModelView, mean_mask_probs, roi_kind
from .views import ViewImage, ViewMaker, ViewSpec

RCNN_KINDS = ('cascade', 'single')
CONF_TYPES = ('box_and_model_avg', 'absent_model_aware_avg', 'max', 'avg')


@dataclass
class ViewPrediction:
    """One member x view's own instances in original pixels, labels in the ensemble's class list."""
    member: int
    weight: float                   # the member's weight
    bboxes: torch.Tensor            # N x 4 float32
    scores: torch.Tensor            # N
    labels: torch.Tensor            # N int64 (ensemble classes)
    masks: list | None              # ``crop_masks`` of its N x H x W masks; None for R-CNN members


def crop_masks(masks: torch.Tensor) -> list[tuple[int, int, int, int, np.ndarray] | None]:
    """Full-size bool masks -> per instance (y0, y1, x0, x1, the mask inside that extent), None when empty:
    12 member x views x 120 full-size masks of a 1024 x 768 image would hold 1.1 GB."""
    out = []
    for mask in masks.cpu().numpy():
        ext = _mask_extent(mask)
        out.append(None if ext is None else ext + (mask[ext[0]:ext[1], ext[2]:ext[3]].copy(), ))
    return out


def _unmirror(boxes: torch.Tensor, width: int) -> torch.Tensor:
    out = boxes.clone()
    out[:, 0], out[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return out


def predict_view(member: Member, k: int, kind: str | None, view: ViewImage, classes: ClassMap,
                 share: float) -> tuple[ViewPrediction, ModelView | None]:
    """One member x view -> its prediction, and for an R-CNN member the ModelView that re-segments."""
    model = member.model
    sample = DetDataSample(metainfo=view.metainfo)
    data = model.data_preprocessor({'inputs': [view.inputs], 'data_samples': [sample]}, False)
    mv = None
    if kind in RCNN_KINDS:
        feats = model.extract_feat(data['inputs'])
        mv = ModelView(model, share, view, data['data_samples'][0], feats, k, kind)
        rpn = model.rpn_head.predict(feats, data['data_samples'], rescale=False)
        res = model.roi_head.predict_bbox(feats, [mv.meta], rpn, rcnn_test_cfg=model.roi_head.test_cfg,
                                          rescale=False)[0]
        bboxes, masks = view.to_original(res.bboxes), None
    else:
        res = model.predict(data['inputs'], data['data_samples'], rescale=True)[0].pred_instances
        if 'masks' not in res:
            raise ValueError(f'{member.label(k)}: its predict returns no masks')
        bboxes, masks = res.bboxes, res.masks.bool()
        if view.spec.flip:
            bboxes, masks = _unmirror(bboxes, view.metainfo['ori_shape'][1]), masks.flip(-1)
    labels = torch.from_numpy(classes.index[k])[res.labels.cpu()]
    return ViewPrediction(k, float(member.weight), bboxes.float().cpu(), res.scores.float().cpu(), labels,
                          None if masks is None else crop_masks(masks)), mv


def class_groups(preds: Sequence[ViewPrediction], classes: ClassMap) -> list[tuple[list[int], np.ndarray]]:
    """The classes grouped by which member x views predict them: (prediction indices, classes) pairs, so
    that one fusion call per group averages every class over exactly its own members."""
    covers = classes.covers()
    groups: dict[tuple[int, ...], list[int]] = {}
    for c in range(classes.num_classes):
        key = tuple(i for i, p in enumerate(preds) if covers[p.member, c])
        if key:
            groups.setdefault(key, []).append(c)
    return [(list(key), np.asarray(cls, np.int64)) for key, cls in groups.items()]


def _normalised(boxes: torch.Tensor, width: int, height: int) -> np.ndarray:
    """Pixel boxes -> [0, 1] (x by the width, y by the height), clipped first: ensemble-boxes would clip
    pixel coordinates itself, with a warning per box."""
    scale = np.array([width, height, width, height], np.float64)
    b = boxes.detach().cpu().numpy().astype(np.float64)
    return np.clip(b, 0, scale) / scale


def fuse_wbf(preds: Sequence[ViewPrediction], classes: ClassMap, width: int, height: int,
             fusion_iou: float = 0.55, skip_box_thr: float = 0.0,
             conf_type: str = 'box_and_model_avg') -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``weighted_boxes_fusion`` per class group, member weights passed per member x view: fused boxes
    (pixels), scores, labels, best first. Zero-area boxes are dropped (ensemble-boxes skips them)."""
    if conf_type not in CONF_TYPES:
        raise ValueError(f'conf_type must be one of {CONF_TYPES}, got {conf_type!r}')
    out_boxes, out_scores, out_labels = [], [], []
    for members, cls in class_groups(preds, classes):
        boxes_list, scores_list, labels_list, weights = [], [], [], []
        for i in members:
            p = preds[i]
            sel = np.isin(p.labels.cpu().numpy(), cls)
            b = _normalised(p.bboxes, width, height)[sel]
            area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
            keep = area > 0
            boxes_list.append(b[keep])
            scores_list.append(p.scores.cpu().numpy().astype(np.float64)[sel][keep])
            labels_list.append(p.labels.cpu().numpy()[sel][keep])
            weights.append(p.weight)
        if sum(len(b) for b in boxes_list) == 0:
            continue
        boxes, scores, labels = weighted_boxes_fusion(boxes_list, scores_list, labels_list, weights=weights,
                                                      iou_thr=fusion_iou, skip_box_thr=skip_box_thr,
                                                      conf_type=conf_type)
        out_boxes.append(boxes * np.array([width, height, width, height]))
        out_scores.append(scores)
        out_labels.append(labels)
    return _sorted(out_boxes, out_scores, out_labels)


def _sorted(boxes, scores, labels) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not boxes:
        return torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long)
    boxes, scores, labels = np.concatenate(boxes), np.concatenate(scores), np.concatenate(labels)
    order = np.argsort(-scores, kind='stable')
    return (torch.from_numpy(boxes[order]).float(), torch.from_numpy(scores[order]).float(),
            torch.from_numpy(labels[order].astype(np.int64)))


def fuse_nms(preds: Sequence[ViewPrediction], classes: ClassMap, iou_thr: float,
             soft: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class NMS (mmcv's, no pixel offset) over the union of every member x view's instances, or
    soft-NMS when ``soft`` gives its parameters (sigma, min_score, method). A score is first scaled by its
    member's weight over the largest weight among the members that predict its class (equal weights: the
    scores as predicted)."""
    if not preds or sum(len(p.scores) for p in preds) == 0:
        return torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long)
    weights = np.asarray([[p.weight] for p in preds])
    covers = classes.covers()[[p.member for p in preds]]
    top = np.where(covers, weights, 0).max(0)                   # C: best weight per class
    boxes = torch.cat([p.bboxes for p in preds])
    labels = torch.cat([p.labels for p in preds])
    scale = torch.cat([torch.from_numpy(p.weight / np.maximum(top[p.labels.cpu().numpy()], 1e-12)).float()
                       for p in preds])
    scores = torch.cat([p.scores for p in preds]) * scale
    cfg = dict(type='nms', iou_threshold=iou_thr) if soft is None else \
        dict(type='soft_nms', iou_threshold=iou_thr, **soft)
    dets, keep = batched_nms(boxes, scores, labels, cfg)
    return dets[:, :4].float(), dets[:, 4].float(), labels[keep]


def assign_clusters(preds: Sequence[ViewPrediction], boxes: torch.Tensor, labels: torch.Tensor,
                    iou_thr: float) -> list[list[tuple[int, int]]]:
    """For every fused box, the (prediction, instance) pairs of its cluster: each input instance joins the
    fused box of its own label that it overlaps most, when that IoU exceeds ``iou_thr`` (the clustering's
    rule); a fused box that gets none takes its label's most overlapping instance."""
    clusters: list[list[tuple[int, int]]] = [[] for _ in range(len(boxes))]
    if len(boxes) == 0:
        return clusters
    owners = [(i, j) for i, p in enumerate(preds) for j in range(len(p.scores))]
    if not owners:
        return clusters
    in_boxes = torch.cat([p.bboxes for p in preds]).float()
    in_labels = torch.cat([p.labels for p in preds])
    iou = bbox_overlaps(in_boxes, boxes.float())
    iou[in_labels[:, None] != labels[None, :]] = -1
    best, where = iou.max(1)
    for n in (best > iou_thr).nonzero()[:, 0].tolist():
        clusters[int(where[n])].append(owners[n])
    col_best, col_where = iou.max(0)
    for f, members in enumerate(clusters):
        if not members and col_best[f] > 0:
            members.append(owners[int(col_where[f])])
    return clusters


def _mask_extent(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) bounding the mask's pixels, or None when it has none (numpy's ``any`` here is
    two orders of magnitude faster than torch's on a full-size bool mask)."""
    rows = mask.any(1)
    if not rows.any():
        return None
    ys, xs = np.flatnonzero(rows), np.flatnonzero(mask.any(0))
    return int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1


def fuse_masks(preds: Sequence[ViewPrediction], rcnn_views: Sequence[ModelView], classes: ClassMap,
               boxes: torch.Tensor, labels: torch.Tensor, clusters: Sequence[Sequence[tuple[int, int]]],
               height: int, width: int, mask_thr: float, rcnn_weight: np.ndarray) -> torch.Tensor:
    """N x height x width bool. ``rcnn_weight[c]``: the summed member weight of the R-CNN member x views
    that predict class c (their kind's weight; the other kind's is the summed weight of the distinct
    member x views in the cluster). Each mask is worked out inside its own region (the fused box's pasting
    region and the extents of its cluster's masks)."""
    n = len(boxes)
    masks = torch.zeros(n, height, width, dtype=torch.bool)
    if n == 0:
        return masks
    probs = None
    if rcnn_views:
        device = rcnn_views[0].feats[0].device
        probs = mean_mask_probs(rcnn_views, classes, boxes.to(device), labels.to(device)).cpu()
    for f in range(n):
        w_r = float(rcnn_weight[int(labels[f])]) if probs is not None else 0.0
        others = [(i, j) for i, j in clusters[f] if preds[i].masks is not None]
        w_o = sum(preds[i].weight for i in {i for i, _ in others})
        parts = []
        if w_r > 0:
            pasted, (sy, sx) = _do_paste_mask(probs[f][None, None], boxes[f][None], height, width,
                                              skip_empty=True)
            parts.append((w_r / (w_r + w_o), pasted[0].numpy(), sy.start, sy.stop, sx.start, sx.stop))
        if w_o > 0:
            total = sum(preds[i].weight for i, _ in others)
            for i, j in others:
                crop = preds[i].masks[j]
                if crop is not None:
                    y0, y1, x0, x1, mask = crop
                    share = (w_o / (w_r + w_o)) * preds[i].weight / total
                    parts.append((share, mask, y0, y1, x0, x1))
        if not parts:
            continue
        y0, y1 = min(p[2] for p in parts), max(p[3] for p in parts)
        x0, x1 = min(p[4] for p in parts), max(p[5] for p in parts)
        acc = np.zeros((y1 - y0, x1 - x0), np.float32)
        for share, part, py0, py1, px0, px1 in parts:
            acc[py0 - y0:py1 - y0, px0 - x0:px1 - x0] += np.float32(share) * part
        masks[f, y0:y1, x0:x1] = torch.from_numpy(acc >= mask_thr)
    return masks


def finish(scores: torch.Tensor, score_thr: float, max_per_img: int) -> torch.Tensor:
    """Indices of the fused instances kept: score above ``score_thr``, the best ``max_per_img``."""
    keep = (scores > score_thr).nonzero()[:, 0]
    return keep[:max_per_img]


class LateFusion:
    """Members x views predicting on their own, fused by ``fuse_boxes`` (a subclass's), masks by
    ``fuse_masks``. ``cluster_iou``: the IoU of the mask clusters (the box fusion's own threshold)."""

    cluster_iou: float = 0.55

    def __init__(self, members: Sequence[Member], views: Sequence[ViewSpec], num_classes: int | None = None,
                 score_thr: float | None = None, iou_thr: float | None = None,
                 max_per_img: int | None = None, mask_thr: float | None = None,
                 timer: StageTimer | None = None):
        self.members = list(members)
        weights = check_weights(self.members)
        self.num_classes = model_num_classes(self.members[0].model) if num_classes is None else num_classes
        self.classes = ClassMap(self.members, self.num_classes)
        self.kinds = []
        for i, m in enumerate(self.members):
            try:
                self.kinds.append(roi_kind(m.model))
            except ValueError:
                roi_head = getattr(m.model, 'roi_head', None)
                if roi_head is not None and not getattr(roi_head, 'with_mask', False):
                    raise ValueError(f'{m.label(i)} predicts no masks') from None
                self.kinds.append(None)
        self.specs = list(views)
        if not self.specs:
            raise ValueError('no views: give at least one scale')
        self.view_maker = ViewMaker(self.members[0].model.cfg, self.specs)
        defaults = default_test_settings(self.members[0].model)
        self.score_thr = defaults['score_thr'] if score_thr is None else score_thr
        self.iou_thr = defaults['iou_thr'] if iou_thr is None else iou_thr
        self.max_per_img = defaults['max_per_img'] if max_per_img is None else max_per_img
        self.mask_thr = defaults['mask_thr'] if mask_thr is None else mask_thr
        self.timer = timer or StageTimer(enabled=False)
        rcnn = np.array([k in RCNN_KINDS and w > 0 for k, w in zip(self.kinds, weights)])
        w = np.asarray(weights) * rcnn
        self.rcnn_share = w / max(w.sum() * len(self.specs), 1e-300)
        self.rcnn_weight = (self.classes.covers() * w[:, None]).sum(0) * len(self.specs)

    def fuse_boxes(self, preds: Sequence[ViewPrediction], width: int,
                   height: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, image, img_id=0) -> InstanceData:
        """An image file (or BGR array) -> InstanceData(bboxes, scores, labels, masks) on the CPU, boxes
        and masks in original image pixels, best score first."""
        with self.timer('load+resize'):
            views = self.view_maker(image, img_id)
        return self._fuse(views).cpu()

    @torch.no_grad()
    def predict_views(self, views: Sequence[ViewImage]):
        """``predict`` of views already made, as ``runner.PendingMasks`` (masks already full size)."""
        from .runner import PendingMasks
        out = self._fuse(views).cpu()
        height, width = views[0].metainfo['ori_shape']
        return PendingMasks(out.bboxes, out.scores, out.labels, height, width, mask_thr=self.mask_thr,
                            masks=out.masks)

    def _fuse(self, views: Sequence[ViewImage]) -> InstanceData:
        height, width = views[0].metainfo['ori_shape']
        preds, rcnn_views = [], []
        with self.timer('members'):
            for k, member in enumerate(self.members):
                if member.weight <= 0:
                    continue
                for view in views:
                    pred, mv = predict_view(member, k, self.kinds[k], view, self.classes,
                                            float(self.rcnn_share[k]))
                    preds.append(pred)
                    if mv is not None:
                        rcnn_views.append(mv)
        with self.timer('box fusion'):
            boxes, scores, labels = self.fuse_boxes(preds, width, height)
            keep = finish(scores, self.score_thr, self.max_per_img)
            clusters = assign_clusters(preds, boxes, labels, self.cluster_iou)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            clusters = [clusters[i] for i in keep.tolist()]
        with self.timer('masks'):
            masks = fuse_masks(preds, rcnn_views, self.classes, boxes, labels, clusters, height, width,
                               self.mask_thr, self.rcnn_weight)
        out = InstanceData()
        out.bboxes, out.scores, out.labels, out.masks = boxes, scores, labels, masks
        return out
