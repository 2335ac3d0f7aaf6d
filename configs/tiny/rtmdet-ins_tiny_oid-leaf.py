# Slim single-stage leaf model (275 classes, RTMDet-Ins tiny) for CPU: the single-stage member of the
# tests' and the demo's heterogeneous ensembles, trained on the synthetic dataset at 256 px like the slim
# cascade. No mosaic / mix-up (mmdetection's recipe for 300 COCO epochs): a few hundred CPU iterations
# learn more from plain resized images.
_base_ = [
    '../_base_/models/rtmdet-ins_tiny_oid.py',
    '../_base_/datasets/oid-instance_cpu-256.py',
    '../_base_/schedules/cpu-tiny.py',
    '../_base_/oid-runtime.py',
]
model = dict(test_cfg=dict(nms_pre=300, max_per_img=30))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True, poly2mask=True),
    dict(type='RandomResize', scale=[(224, 224), (320, 320)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1)),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
# AdamW as mmdetection's RTMDet recipe (SGD at the cascade's lr diverges on a from-scratch dense head).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=0.002, weight_decay=0.05),
    clip_grad=dict(max_norm=35, norm_type=2))
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=200, max_keep_ckpts=2))
log_processor = dict(window_size=10)
