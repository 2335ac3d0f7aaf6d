# RTMDet-Ins (mmdetection's single-stage instance segmenter: CSPNeXt + PAFPN + a dense head that predicts
# per-instance dynamic mask kernels) at its `tiny` width, written out in full so that it does not pull in
# mmdetection's COCO dataset and schedule. BN instead of SyncBN: runs on one CPU process as well as on
# GPUs. The class count is one argument of the head; the challenge scores many low-score masks.
custom_imports = dict(imports=['mmdet_ext'], allow_failed_imports=False)

num_classes = 275
norm_cfg = dict(type='BN', requires_grad=True)
act_cfg = dict(type='SiLU', inplace=True)

model = dict(
    type='RTMDet',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[103.53, 116.28, 123.675],
        std=[57.375, 57.12, 58.395],
        bgr_to_rgb=False,
        pad_size_divisor=32,
        pad_mask=True,  # the head stacks the GT masks of a batch: pad them to the batch shape
        batch_augments=None),
    backbone=dict(
        type='CSPNeXt', arch='P5', expand_ratio=0.5, deepen_factor=0.167, widen_factor=0.375,
        channel_attention=True, norm_cfg=norm_cfg, act_cfg=act_cfg, init_cfg=None),
    neck=dict(
        type='CSPNeXtPAFPN', in_channels=[96, 192, 384], out_channels=96, num_csp_blocks=1,
        expand_ratio=0.5, norm_cfg=norm_cfg, act_cfg=act_cfg),
    bbox_head=dict(
        type='RTMDetInsSepBNHead',
        num_classes=num_classes,
        in_channels=96,
        stacked_convs=2,
        share_conv=True,
        pred_kernel_size=1,
        feat_channels=96,
        act_cfg=act_cfg,
        norm_cfg=norm_cfg,
        anchor_generator=dict(type='MlvlPointGenerator', offset=0, strides=[8, 16, 32]),
        bbox_coder=dict(type='DistancePointBBoxCoder'),
        loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
        loss_mask=dict(type='DiceLoss', loss_weight=2.0, eps=5e-6, reduction='mean')),
    train_cfg=dict(
        assigner=dict(type='DynamicSoftLabelAssigner', topk=13),
        allowed_border=-1,
        pos_weight=-1,
        debug=False),
    test_cfg=dict(
        nms_pre=1000,
        min_bbox_size=0,
        score_thr=0.0,
        nms=dict(type='nms', iou_threshold=0.6),
        max_per_img=120,
        mask_thr_binary=0.5))
