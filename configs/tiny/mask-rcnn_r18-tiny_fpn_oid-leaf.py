# Slim leaf Mask R-CNN (275 classes) for CPU: the single-RoI-stage member of the heterogeneous ensembles.
# Data, schedule and runtime as the slim leaf cascade (the same four base files and 256 px pipelines).
_base_ = [
    '../_base_/models/mask-rcnn_r18-tiny_fpn_oid.py',
    '../_base_/datasets/oid-instance.py',
    '../_base_/schedules/cpu-tiny.py',
    '../_base_/oid-runtime.py',
]
data_root = 'work_dirs/demo/data/'
image_scale = (256, 256)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True, poly2mask=True),
    dict(type='RandomResize', scale=[(224, 224), (320, 320)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline, filter_cfg=dict(min_size=0)))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(data_root=data_root)
test_evaluator = val_evaluator
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=200, max_keep_ckpts=2))
log_processor = dict(window_size=10)
