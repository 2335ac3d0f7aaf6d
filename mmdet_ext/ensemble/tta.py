"""Test-time augmentation and multi-model ensembling for Cascade Mask R-CNN (masks included).

mmdet 3.3 has no mask TTA and no multi-model ensemble. ``EnsembleTTA`` reproduces the reference
solution's: K detectors (same classes) x V views (scales x {original, mirrored}), in three steps that
share work through common boxes, so that rows line up across views and can simply be averaged:

1. ``propose``  every model x view runs its RPN; the proposals, mapped back to the original image,
                are merged into one shared set (``proposals.merge_proposals``: NMS 0.7, top 1000).
2. ``detect``   every model x view scores the shared proposals through its cascade (stage scores
                averaged, boxes from the last stage); softmax scores and boxes, mapped back, are averaged
                over all model x views (weighted per model); then per-class NMS, threshold, top-k.
3. ``segment``  every model x view x cascade mask stage predicts the final boxes' 28 x 28 masks; mirrored
                ones are mirrored back; the mean is pasted at original size and thresholded.

Backbone and neck run once per model x view (``extract``) and their features serve all three steps.
Everything is mmdet's own: the model's test pipeline and data_preprocessor, ``rpn_head.predict``, the
cascade's ``_refine_roi``, the last bbox head's decoding, ``multiclass_nms``, each stage's mask RoI
extractor and mask head layers (``masks.class_mask_logits`` evaluates the head's last 1 x 1 convolution
at each box's own class only) and the mask head's pasting (``masks.paste_masks``).
With one model and one unmirrored view at the config's test scale the result is the model's own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from mmdet.models.layers import multiclass_nms
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox2roi
from mmengine.structures import InstanceData

from .masks import class_mask_logits, paste_masks
from .proposals import merge_proposals
from .timing import StageTimer
from .views import ViewImage, ViewMaker, view_specs


@dataclass
class ModelView:
    """One model looking at one view: its normalised input's metainfo and its FPN features."""
    model: torch.nn.Module
    weight: float               # share of this model x view in every average (all shares sum to 1)
    view: ViewImage
    sample: DetDataSample       # metainfo after the model's data_preprocessor (pad and batch shapes)
    feats: tuple

    @property
    def meta(self) -> dict:
        return self.sample.metainfo


def _check_models(models: Sequence[torch.nn.Module]) -> int:
    """All models must be cascade two-stage detectors with masks and the same class count."""
    counts = set()
    for i, m in enumerate(models):
        head = getattr(m, 'roi_head', None)
        if getattr(m, 'rpn_head', None) is None or not hasattr(head, '_refine_roi') \
                or not getattr(head, 'with_mask', False):
            raise ValueError(f'model {i} ({type(m).__name__}) is not a cascade R-CNN with an RPN and masks')
        counts.add(head.bbox_head[-1].num_classes)
    if len(counts) != 1:
        raise ValueError(f'models predict different numbers of classes: {sorted(counts)}')
    return counts.pop()


class EnsembleTTA:
    """K detectors x V views -> one set of boxes, scores, labels and full-size masks per image.

    ``scales``: Resize scales of the views (the config's test scale gives its single-model view);
    ``flip`` adds the mirror of each. Views are made once per image with the first model's test pipeline;
    each model normalises and pads them with its own data_preprocessor. ``weights``: one per model
    (default equal), for the averages of steps 2 and 3 (the proposal merge ranks by RPN score alone).
    ``score_thr``, ``max_per_img``, ``iou_thr`` (of the per-class NMS) and ``mask_thr`` default to the
    first model's ``test_cfg.rcnn``. ``proposals_within_views``: see ``proposals.merge_proposals``.
    """

    def __init__(self, models: Sequence[torch.nn.Module], scales: Sequence[Sequence[int]],
                 flip: bool = False, weights: Sequence[float] | None = None, max_proposals: int = 1000,
                 proposal_iou: float = 0.7, proposals_within_views: bool = False,
                 iou_thr: float | None = None, score_thr: float | None = None,
                 max_per_img: int | None = None, mask_thr: float | None = None,
                 timer: StageTimer | None = None):
        self.models = list(models)
        self.num_classes = _check_models(self.models)
        weights = [1.0] * len(self.models) if weights is None else [float(w) for w in weights]
        if len(weights) != len(self.models) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f'need one non-negative weight per model ({len(self.models)}), got {weights}')
        self.specs = view_specs(scales, flip)
        if not self.specs:
            raise ValueError('no views: give at least one scale')
        total = sum(weights) * len(self.specs)
        self.view_share = [w / total for w in weights]      # of each view of model k; all sum to 1
        self.view_maker = ViewMaker(self.models[0].cfg, self.specs)
        rcnn = self.models[0].test_cfg.rcnn
        self.max_proposals, self.proposal_iou = max_proposals, proposal_iou
        self.proposals_within_views = proposals_within_views
        self.nms_cfg = dict(rcnn.nms)
        if iou_thr is not None:
            self.nms_cfg['iou_threshold'] = iou_thr
        self.score_thr = rcnn.score_thr if score_thr is None else score_thr
        self.max_per_img = rcnn.max_per_img if max_per_img is None else max_per_img
        self.mask_thr = rcnn.mask_thr_binary if mask_thr is None else mask_thr
        self.timer = timer or StageTimer(enabled=False)

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

    def extract(self, views: Sequence[ViewImage]) -> list[ModelView]:
        """Normalise and pad each view with each model's data_preprocessor; backbone + neck once each."""
        out = []
        with self.timer('features'):
            for model, weight in zip(self.models, self.view_share):
                for view in views:
                    sample = DetDataSample(metainfo=view.metainfo)
                    data = model.data_preprocessor({'inputs': [view.inputs], 'data_samples': [sample]}, False)
                    feats = model.extract_feat(data['inputs'])
                    out.append(ModelView(model, weight, view, data['data_samples'][0], feats))
        return out

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
            class_specific = any(boxes.shape[1] != 4 for boxes, _ in per_view)
            sum_boxes, sum_scores = 0, 0
            for mv, (boxes, scores) in zip(model_views, per_view):
                if class_specific and boxes.shape[1] == 4:     # a class-agnostic model among others
                    boxes = boxes.repeat(1, self.num_classes)
                sum_boxes = sum_boxes + mv.weight * boxes
                sum_scores = sum_scores + mv.weight * scores
        with self.timer('nms'):
            boxes, scores, labels = self._class_nms(sum_boxes, sum_scores, model_views[0].view)
        results.bboxes, results.scores, results.labels = boxes, scores, labels
        return results

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
        """Proposals (original pixels) through one model x view's cascade -> boxes in original pixels
        (N x 4, or N x 4C when class-specific) and class probabilities (N x C+1)."""
        head = mv.model.roi_head
        rois = bbox2roi([mv.view.to_view(proposals)])
        rois, cls_scores, bbox_preds = head._refine_roi(mv.feats, rois, [mv.meta], (len(proposals), ))
        raw = head.bbox_head[-1].predict_by_feat(rois=rois, cls_scores=cls_scores, bbox_preds=bbox_preds,
                                                 batch_img_metas=[mv.meta], rcnn_test_cfg=None,
                                                 rescale=False)[0]
        return mv.view.to_original(raw.bboxes), raw.scores

    def segment(self, model_views: Sequence[ModelView], dets: InstanceData, height: int,
                width: int) -> torch.Tensor:
        """Step 3: the mean mask probability of every model x view x mask stage, pasted and thresholded."""
        if len(dets) == 0:
            return torch.zeros(0, height, width, dtype=torch.bool)
        with self.timer('mask heads'):
            probs = 0
            for mv in model_views:
                probs = probs + mv.weight * self._mask_view(mv, dets.bboxes, dets.labels)
        with self.timer('paste'):
            return paste_masks(probs, dets.bboxes, height, width, self.mask_thr)

    @staticmethod
    def _mask_view(mv: ModelView, boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The boxes' mask probabilities (N x 28 x 28) of one model x view, mean over its mask stages,
        in the original image's orientation."""
        head = mv.model.roi_head
        rois = bbox2roi([mv.view.to_view(boxes)])
        stages = []
        for stage in range(head.num_stages):
            extractor = head.mask_roi_extractor[stage]
            mask_feats = extractor(mv.feats[:extractor.num_inputs], rois)
            stages.append(class_mask_logits(head.mask_head[stage], mask_feats, labels).sigmoid())
        probs = torch.stack(stages).mean(0)
        return probs.flip(-1) if mv.view.spec.flip else probs
