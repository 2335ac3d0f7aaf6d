"""Shared-proposal fusion: test-time augmentation and multi-model ensembling of RPN + RoI-head detectors
(Cascade Mask R-CNN, Mask R-CNN, mixed), masks included.

mmdet 3.3 has no mask TTA and no multi-model ensemble. ``SharedProposals`` reproduces the reference
solution's: K members x V views (scales x {original, mirrored}), in three steps that share work through
common boxes, so that rows line up across views and can simply be averaged:

1. ``propose``  every member x view runs its RPN; the proposals, mapped back to the original image,
                are merged into one shared set (``proposals.merge_proposals``: NMS 0.7, top 1000).
2. ``detect``   every member x view scores the shared proposals through its RoI head (a cascade's stage
                scores averaged, boxes from its last stage; Mask R-CNN's single head is a one-stage
                cascade); softmax scores and boxes, mapped back, are averaged over all member x views
                (weighted per member; per class over the members that predict it, see ``members``);
                then per-class NMS, threshold, top-k.
3. ``segment``  every member x view x mask stage predicts the final boxes' 28 x 28 masks; mirrored
                ones are mirrored back; the mean is pasted at original size and thresholded.

Backbone and neck run once per member x view (``extract``) and their features serve all three steps.
Everything is mmdet's own: the model's test pipeline and data_preprocessor, ``rpn_head.predict``, the
cascade's ``_refine_roi`` or the single head's ``_bbox_forward``, the last bbox head's decoding,
``multiclass_nms``, each stage's mask RoI extractor and mask head layers (``masks.class_mask_logits``
evaluates the head's last 1 x 1 convolution at each box's own class only) and the mask head's pasting
(``masks.paste_masks``). With one model and one unmirrored view at the config's test scale the result is
the model's own. HTC-style heads (mask information flow between stages, semantic branch) do not fit:
they are refused with the reason; late fusion (``late``) takes them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from mmdet.models.layers import multiclass_nms
from mmdet.models.roi_heads import (
    CascadeRoIHead,
    HybridTaskCascadeRoIHead,
    StandardRoIHead,
)
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox2roi
from mmengine.structures import InstanceData

from .masks import class_mask_logits, paste_masks
from .members import (
    ClassMap,
    Member,
    check_weights,
    default_test_settings,
    model_num_classes,
)
from .proposals import merge_proposals
from .timing import StageTimer
from .views import ViewImage, ViewMaker, ViewSpec

PROPOSAL_NMS = ('across-views', 'all')


@dataclass
class ModelView:
    """One member looking at one view: its normalised input's metainfo and its FPN features."""
    model: torch.nn.Module
    weight: float               # share of this member x view in every average (all shares sum to 1)
    view: ViewImage
    sample: DetDataSample       # metainfo after the model's data_preprocessor (pad and batch shapes)
    feats: tuple
    member: int = 0             # index of the member
    kind: str = 'cascade'       # 'cascade' or 'single' (see ``roi_kind``)

    @property
    def meta(self) -> dict:
        return self.sample.metainfo


def _inherits(head, base, names: Sequence[str]) -> bool:
    return all(getattr(type(head), n) is getattr(base, n) for n in names)


def roi_kind(model: torch.nn.Module) -> str:
    """'cascade' (mmdet's CascadeRoIHead) or 'single' (StandardRoIHead, Mask R-CNN's) when the shared
    proposals and the box re-segmentation fit the model; a ValueError that says why not otherwise."""
    name, head = type(model).__name__, getattr(model, 'roi_head', None)
    if getattr(model, 'rpn_head', None) is None or head is None:
        raise ValueError(f'{name} has no RPN + RoI head: shared proposals need one (a late fusion takes it)')
    if not getattr(head, 'with_mask', False):
        raise ValueError(f'{name} ({type(head).__name__}) has no mask head')
    if isinstance(head, HybridTaskCascadeRoIHead):
        raise ValueError(f'{name} ({type(head).__name__}): an HTC mask branch feeds each stage the previous '
                         'stages\' mask features (and a semantic branch), so its masks cannot be re-run on '
                         'shared boxes stage by stage; use a late fusion (WBF, NMS) for it')
    if isinstance(head, CascadeRoIHead) and _inherits(head, CascadeRoIHead, ('_refine_roi', '_mask_forward')):
        return 'cascade'
    if isinstance(head, StandardRoIHead) and _inherits(head, StandardRoIHead,
                                                       ('_bbox_forward', '_mask_forward', 'predict_mask')):
        return 'single'
    raise ValueError(f'{name}: its RoI head {type(head).__name__} changes how boxes or masks are predicted '
                     '(not mmdet\'s CascadeRoIHead or StandardRoIHead); use a late fusion for it')


def extract_views(members: Sequence[Member], shares: Sequence[float], views: Sequence[ViewImage],
                  kinds: Sequence[str], batch: bool = False) -> list[ModelView]:
    """Normalise and pad each view with each member's data_preprocessor; backbone + neck once each.
    ``batch``: views of one shape (a scale and its mirror) go through the backbone as one batch (on a GPU
    one call instead of two; the features equal the separate calls' to float rounding)."""
    groups = {}
    for i, view in enumerate(views):
        groups.setdefault(tuple(view.inputs.shape) if batch else i, []).append(i)
    out = []
    for k, (member, share, kind) in enumerate(zip(members, shares, kinds)):
        model = member.model
        per_view = {}
        for group in groups.values():
            samples = [DetDataSample(metainfo=views[i].metainfo) for i in group]
            data = model.data_preprocessor({'inputs': [views[i].inputs for i in group], 'data_samples': samples},
                                           False)
            feats = model.extract_feat(data['inputs'])
            for j, i in enumerate(group):
                own = feats if len(group) == 1 else tuple(f[j:j + 1] for f in feats)
                per_view[i] = ModelView(model, share, views[i], data['data_samples'][j], own, k, kind)
        out.extend(per_view[i] for i in range(len(views)))
    return out


def mask_view(mv: ModelView, boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The boxes' mask probabilities (N x 28 x 28) of one member x view, mean over its mask stages, in
    the original image's orientation. ``boxes`` in original pixels, ``labels`` the model's own classes."""
    head = mv.model.roi_head
    rois = bbox2roi([mv.view.to_view(boxes)])
    if mv.kind == 'single':
        extractor = head.mask_roi_extractor
        mask_feats = extractor(mv.feats[:extractor.num_inputs], rois)
        if head.with_shared_head:
            mask_feats = head.shared_head(mask_feats)
        probs = class_mask_logits(head.mask_head, mask_feats, labels).sigmoid()
    else:
        stages = []
        for stage in range(head.num_stages):
            extractor = head.mask_roi_extractor[stage]
            mask_feats = extractor(mv.feats[:extractor.num_inputs], rois)
            stages.append(class_mask_logits(head.mask_head[stage], mask_feats, labels).sigmoid())
        probs = torch.stack(stages).mean(0)
    return probs.flip(-1) if mv.view.spec.flip else probs


def mean_mask_probs(model_views: Sequence[ModelView], classes: ClassMap, boxes: torch.Tensor,
                    labels: torch.Tensor) -> torch.Tensor:
    """N x 28 x 28: the weighted mean of ``mask_view`` over the member x views, for each box over the
    members that predict its (ensemble) label, their shares renormalised."""
    if classes.identity:
        probs = 0
        for mv in model_views:
            probs = probs + mv.weight * mask_view(mv, boxes, labels)
        return probs
    probs, total = None, boxes.new_zeros(len(boxes))
    for mv in model_views:
        local = torch.from_numpy(classes.local[mv.member]).to(labels.device)[labels]
        rows = (local >= 0).nonzero()[:, 0]
        if len(rows) == 0 or mv.weight == 0:
            continue
        part = mask_view(mv, boxes[rows], local[rows])
        if probs is None:
            probs = part.new_zeros((len(boxes), ) + part.shape[1:])
        probs[rows] += mv.weight * part
        total[rows] += mv.weight
    return probs / total.clamp(min=torch.finfo(total.dtype).tiny)[:, None, None]


class SharedProposals:
    """K members x V views -> one set of boxes, scores, labels and full-size masks per image.

    ``views``: ``ViewSpec``s (Resize scale, mirror); the config's test scale unmirrored is the single-model
    view. Views are made once per image with the first member's test pipeline; each member normalises and
    pads them with its own data_preprocessor. Member weights count in the averages of steps 2 and 3 (the
    proposal merge ranks by RPN score alone). ``score_thr``, ``max_per_img``, ``iou_thr`` (of the
    per-class NMS) and ``mask_thr``: None takes the first member's ``test_cfg.rcnn``. ``proposal_nms``:
    'across-views' (a proposal is only suppressed by other views') or 'all' (plain NMS over the union), see
    ``proposals.merge_proposals``; ``proposal_iou`` and ``max_proposals`` are that merge's. ``batch_views``:
    a view and its mirror (one shape) through the backbone as one batch; None: on CUDA only (on a CPU it
    gains nothing and its float rounding would change the serial results' last bits).
    """

    def __init__(self, members: Sequence[Member], views: Sequence[ViewSpec], num_classes: int | None = None,
                 score_thr: float | None = None, iou_thr: float | None = None,
                 max_per_img: int | None = None, mask_thr: float | None = None,
                 timer: StageTimer | None = None, max_proposals: int = 1000, proposal_iou: float = 0.7,
                 proposal_nms: str = 'across-views', batch_views: bool | None = None):
        self.members = list(members)
        weights = check_weights(self.members)
        self.kinds = [roi_kind(m.model) for m in self.members]
        self.num_classes = model_num_classes(self.members[0].model) if num_classes is None else num_classes
        self.classes = ClassMap(self.members, self.num_classes)
        self.specs = list(views)
        if not self.specs:
            raise ValueError('no views: give at least one scale')
        if proposal_nms not in PROPOSAL_NMS:
            raise ValueError(f'proposal_nms must be one of {PROPOSAL_NMS}, got {proposal_nms!r}')
        total = sum(weights) * len(self.specs)
        self.view_share = [w / total for w in weights]      # of each view of member k; all sum to 1
        self.view_maker = ViewMaker(self.members[0].model.cfg, self.specs)
        self.max_proposals, self.proposal_iou = max_proposals, proposal_iou
        self.proposals_within_views = proposal_nms == 'all'
        self.nms_cfg = dict(self.members[0].model.test_cfg.rcnn.nms)
        if iou_thr is not None:
            self.nms_cfg['iou_threshold'] = iou_thr
        defaults = default_test_settings(self.members[0].model)
        self.score_thr = defaults['score_thr'] if score_thr is None else score_thr
        self.max_per_img = defaults['max_per_img'] if max_per_img is None else max_per_img
        self.mask_thr = defaults['mask_thr'] if mask_thr is None else mask_thr
        self.timer = timer or StageTimer(enabled=False)
        if batch_views is None:         # where it pays: one backbone call for a view and its mirror on a GPU
            batch_views = next(self.members[0].model.parameters()).is_cuda
        self.batch_views = bool(batch_views)

    @torch.no_grad()
    def predict(self, image: str | np.ndarray, img_id=0) -> InstanceData:
        """An image file (or BGR array) -> InstanceData(bboxes, scores, labels, masks) on the CPU, boxes
        and masks in original image pixels, best score first."""
        with self.timer('load+resize'):
            views = self.view_maker(image, img_id)
        height, width = views[0].metainfo['ori_shape']
        model_views = self.extract(views)
        proposals = self.propose(model_views)
        dets = self.detect(model_views, proposals)
        dets.masks = self.segment(model_views, dets, height, width)
        return dets.cpu()

    @torch.no_grad()
    def predict_views(self, views: Sequence[ViewImage]):
        """``predict`` of views already made, stopped before the pasting: ``runner.PendingMasks`` (boxes,
        scores, labels and the mean 28 x 28 mask probabilities on the CPU), for the runner to paste in
        another process while this one predicts the next image."""
        from .runner import PendingMasks
        height, width = views[0].metainfo['ori_shape']
        model_views = self.extract(views)
        dets = self.detect(model_views, self.propose(model_views))
        probs = dets.bboxes.new_zeros(0, 28, 28)
        if len(dets):
            with self.timer('mask heads'):
                probs = mean_mask_probs(model_views, self.classes, dets.bboxes, dets.labels)
        return PendingMasks(dets.bboxes.cpu(), dets.scores.cpu(), dets.labels.cpu(), height, width,
                            probs=probs.cpu(), mask_thr=self.mask_thr)

    def extract(self, views: Sequence[ViewImage]) -> list[ModelView]:
        with self.timer('features'):
            return extract_views(self.members, self.view_share, views, self.kinds, self.batch_views)

    def propose(self, model_views: Sequence[ModelView]) -> torch.Tensor:
        """Step 1: every view's RPN proposals, in original pixels, merged into one set (K x 4)."""
        boxes, scores = [], []
        with self.timer('rpn'):
            for mv in model_views:
                rpn = mv.model.rpn_head.predict(mv.feats, [mv.sample], rescale=False)[0]
                boxes.append(mv.view.to_original(rpn.bboxes))
                scores.append(rpn.scores)
        with self.timer('merge proposals'):
            merged, _ = merge_proposals(boxes, scores, self.proposal_iou, self.max_proposals,
                                        self.proposals_within_views)
        return merged

    def detect(self, model_views: Sequence[ModelView], proposals: torch.Tensor) -> InstanceData:
        """Step 2: score the shared proposals in every view, average, then per-class NMS."""
        results = InstanceData()
        if len(proposals) == 0:
            results.bboxes = proposals.new_zeros(0, 4)
            results.scores = proposals.new_zeros(0)
            results.labels = proposals.new_zeros(0, dtype=torch.long)
            return results
        with self.timer('cascade'):
            per_view = [self._score_view(mv, proposals) for mv in model_views]
            if self.classes.identity:
                sum_boxes, sum_scores = self._plain_mean(model_views, per_view)
            else:
                sum_boxes, sum_scores = self._per_class_mean(model_views, per_view)
        with self.timer('nms'):
            boxes, scores, labels = self._class_nms(sum_boxes, sum_scores, model_views[0].view)
        results.bboxes, results.scores, results.labels = boxes, scores, labels
        return results

    def _plain_mean(self, model_views, per_view):
        """Every member predicts every class: the weighted sums (shares add up to 1)."""
        class_specific = any(boxes.shape[1] != 4 for boxes, _ in per_view)
        sum_boxes, sum_scores = 0, 0
        for mv, (boxes, scores) in zip(model_views, per_view):
            if class_specific and boxes.shape[1] == 4:     # a class-agnostic model among others
                boxes = boxes.repeat(1, self.num_classes)
            sum_boxes = sum_boxes + mv.weight * boxes
            sum_scores = sum_scores + mv.weight * scores
        return sum_boxes, sum_scores

    def _per_class_mean(self, model_views, per_view):
        """Some members predict a subset: each class's score and box are the mean over the member x views
        that predict it, the background score over all; a class no member predicts scores 0."""
        n, c = len(per_view[0][1]), self.num_classes
        sum_boxes = per_view[0][1].new_zeros(n, c, 4)
        sum_scores = per_view[0][1].new_zeros(n, c + 1)
        share = per_view[0][1].new_zeros(c + 1)
        for mv, (boxes, scores) in zip(model_views, per_view):
            cols = torch.from_numpy(self.classes.index[mv.member]).to(scores.device)
            own = len(cols)
            boxes = boxes.view(n, -1, 4).expand(n, own, 4)
            sum_boxes[:, cols] += mv.weight * boxes
            sum_scores[:, cols] += mv.weight * scores[:, :own]
            sum_scores[:, c] += mv.weight * scores[:, own]
            share[cols] += mv.weight
            share[c] += mv.weight
        share = torch.where(share > 0, share, torch.ones_like(share))
        return (sum_boxes / share[:c, None]).view(n, -1), sum_scores / share

    def _class_nms(self, boxes: torch.Tensor, scores: torch.Tensor,
                   frame: ViewImage) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """mmdet's multiclass_nms, its IoUs measured in the pixels of the first view (scale only).

        A keep-ratio resize rounds width and height separately, so IoUs in the original frame differ from
        a view's in the 4th decimal, enough to flip a pair at the threshold. Measuring in the first view's
        frame makes one model x one view exactly the model's own prediction; boxes stay original pixels.
        """
        n = len(boxes)
        boxes = boxes.view(n, -1, 4)
        scaled = (boxes * boxes.new_tensor(frame.scale_factor4)).view(n, -1)
        dets, labels, inds = multiclass_nms(scaled, scores, self.score_thr, self.nms_cfg, self.max_per_img,
                                            return_inds=True)
        return boxes.expand(n, self.num_classes, 4).reshape(-1, 4)[inds], dets[:, 4], labels

    @staticmethod
    def _score_view(mv: ModelView, proposals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Proposals (original pixels) through one member x view's RoI head -> boxes in original pixels
        (N x 4, or N x 4C when class-specific) and class probabilities (N x C+1)."""
        head = mv.model.roi_head
        rois = bbox2roi([mv.view.to_view(proposals)])
        if mv.kind == 'single':
            out = head._bbox_forward(mv.feats, rois)
            raw = head.bbox_head.predict_by_feat(rois=(rois, ), cls_scores=(out['cls_score'], ),
                                                 bbox_preds=(out['bbox_pred'], ), batch_img_metas=[mv.meta],
                                                 rcnn_test_cfg=None, rescale=False)[0]
        else:
            rois, cls_scores, bbox_preds = head._refine_roi(mv.feats, rois, [mv.meta], (len(proposals), ))
            raw = head.bbox_head[-1].predict_by_feat(rois=rois, cls_scores=cls_scores, bbox_preds=bbox_preds,
                                                     batch_img_metas=[mv.meta], rcnn_test_cfg=None,
                                                     rescale=False)[0]
        return mv.view.to_original(raw.bboxes), raw.scores

    def segment(self, model_views: Sequence[ModelView], dets: InstanceData, height: int,
                width: int) -> torch.Tensor:
        """Step 3: the mean mask probability of every member x view x mask stage, pasted and thresholded."""
        if len(dets) == 0:
            return torch.zeros(0, height, width, dtype=torch.bool)
        with self.timer('mask heads'):
            probs = mean_mask_probs(model_views, self.classes, dets.bboxes, dets.labels)
        with self.timer('paste'):
            return paste_masks(probs, dets.bboxes, height, width, self.mask_thr)
