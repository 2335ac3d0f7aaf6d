"""The registry of ensemble fusions, built from the ``fusion`` entry of an ensemble config.

    FUSIONS.build(dict(type='WBF', fusion_iou=0.6), default_args=dict(
        members=[Member(...), ...], views=[ViewSpec(...), ...], num_classes=275,
        score_thr=None, iou_thr=None, max_per_img=None, mask_thr=None, timer=None))

Every fusion has ``.num_classes`` and ``.predict(image, img_id=0) -> InstanceData(bboxes, scores, labels,
masks)``. The four test settings (None: the first member's ``test_cfg.rcnn``, or ``test_cfg`` of a
single-stage model) apply to the ensemble's output; ``iou_thr`` is the NMS IoU of ``SharedProposals``'
per-class NMS and of the ``NMS`` / ``SoftNMS`` fusions.

- ``SharedProposals``: one proposal set for all R-CNN members x views, boxes / scores / masks averaged
  row by row (``tta``). Needs every member to be a Cascade Mask R-CNN or Mask R-CNN.
- ``WBF``: late fusion with ensemble-boxes' weighted boxes fusion (``late``). Any model with masks.
  ``fusion_iou`` (0.55): IoU at which a box joins a cluster (ensemble-boxes' ``iou_thr``); ``skip_box_thr``
  (0.0): instances scored below it are left out; ``conf_type``: ensemble-boxes', default
  'box_and_model_avg' (a weighted mean of the cluster's scores times the share of the member x views'
  weight present: never above 1, unlike 'avg' with unequal weights).
- ``NMS`` / ``SoftNMS``: the late-fusion baselines, per-class NMS (or Gaussian / linear soft-NMS:
  ``sigma``, ``min_score``, ``method``) over all instances at ``iou_thr``; masks as for WBF, the clusters
  taken at ``iou_thr``.
"""
from __future__ import annotations

from mmengine.registry import Registry

from .late import CONF_TYPES, LateFusion, fuse_nms, fuse_wbf
from .tta import PROPOSAL_NMS, SharedProposals


def _build(cfg, registry, default_args=None):
    """Plain construction: the fusions are not mmdet modules, so no default-scope switching."""
    args = dict(cfg)
    kind = args.pop('type')
    cls = registry.get(kind) if isinstance(kind, str) else kind
    if cls is None:
        raise KeyError(f'{kind!r} is not a fusion; choose one of {sorted(registry.module_dict)}')
    for key, value in (default_args or {}).items():
        args.setdefault(key, value)
    return cls(**args)


FUSIONS = Registry('ensemble fusion', build_func=_build, scope='mmdet_ext')
FUSIONS.register_module('SharedProposals', module=SharedProposals)


@FUSIONS.register_module()
class WBF(LateFusion):

    def __init__(self, *args, fusion_iou: float = 0.55, skip_box_thr: float = 0.0,
                 conf_type: str = 'box_and_model_avg', **kwargs):
        if conf_type not in CONF_TYPES:
            raise ValueError(f'conf_type must be one of {CONF_TYPES}, got {conf_type!r}')
        super().__init__(*args, **kwargs)
        self.cluster_iou = self.fusion_iou = fusion_iou
        self.skip_box_thr, self.conf_type = skip_box_thr, conf_type

    def fuse_boxes(self, preds, width, height):
        return fuse_wbf(preds, self.classes, width, height, self.fusion_iou, self.skip_box_thr,
                        self.conf_type)


@FUSIONS.register_module()
class NMS(LateFusion):

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cluster_iou = self.iou_thr

    def fuse_boxes(self, preds, width, height):
        return fuse_nms(preds, self.classes, self.iou_thr)


@FUSIONS.register_module()
class SoftNMS(LateFusion):

    def __init__(self, *args, sigma: float = 0.5, min_score: float = 1e-3, method: str = 'gaussian',
                 **kwargs):
        if method not in ('gaussian', 'linear'):
            raise ValueError(f"method must be 'gaussian' or 'linear', got {method!r}")
        super().__init__(*args, **kwargs)
        self.cluster_iou = self.iou_thr
        self.soft = dict(sigma=sigma, min_score=min_score, method=method)

    def fuse_boxes(self, preds, width, height):
        return fuse_nms(preds, self.classes, self.iou_thr, self.soft)


__all__ = ['FUSIONS', 'NMS', 'PROPOSAL_NMS', 'WBF', 'SharedProposals', 'SoftNMS']
