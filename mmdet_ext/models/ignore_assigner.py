"""``MaxIoUAssigner`` whose ignore regions hold in every image, also in one without ground truth.

mmdet's assigner drops candidates overlapping ``gt_instances_ignore`` (IoF > ``ignore_iof_thr``) from both
positives and negatives, but an image whose only boxes are ignored (every box of it box-only, common in
Open Images) takes its early exit for "no ground truth" and turns every candidate into background. Here
those candidates stay ignored there too: a box-only object is never taught as background.
"""
from __future__ import annotations

from mmdet.models.task_modules.assigners import MaxIoUAssigner
from mmdet.registry import TASK_UTILS


@TASK_UTILS.register_module()
class IgnoringMaxIoUAssigner(MaxIoUAssigner):

    def assign(self, pred_instances, gt_instances, gt_instances_ignore=None, **kwargs):
        result = super().assign(pred_instances, gt_instances, gt_instances_ignore, **kwargs)
        priors = pred_instances.priors
        if (self.ignore_iof_thr <= 0 or gt_instances_ignore is None or len(gt_instances.bboxes) > 0
                or gt_instances_ignore.bboxes.numel() == 0 or priors.numel() == 0):
            return result
        ignore = gt_instances_ignore.bboxes.to(priors.device)
        if self.ignore_wrt_candidates:
            iof = self.iou_calculator(priors, ignore, mode='iof').max(dim=1)[0]
        else:
            iof = self.iou_calculator(ignore, priors, mode='iof').max(dim=0)[0]
        result.gt_inds[iof.to(result.gt_inds.device) > self.ignore_iof_thr] = -1
        return result
