# Cascade Mask R-CNN (mmdetection's R50-FPN model) with the class count as one argument of the RoI head.
# Every model of the project inherits this; a variant overrides the backbone and `num_classes` only.
_base_ = 'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py'

custom_imports = dict(imports=['mmdet_ext'], allow_failed_imports=False)

model = dict(
    roi_head=dict(type='OIDCascadeRoIHead', num_classes=275),
    # The challenge scores up to 120-200 masks per image and rewards low thresholds.
    test_cfg=dict(rcnn=dict(score_thr=0.0, max_per_img=120, mask_thr_binary=0.5)))
