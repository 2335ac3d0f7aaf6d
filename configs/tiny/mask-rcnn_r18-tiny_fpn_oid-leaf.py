# Slim leaf Mask R-CNN (275 classes) for CPU: the single-RoI-stage member of the heterogeneous ensembles.
# Data, schedule and runtime as the slim leaf cascade.
_base_ = [
    '../_base_/models/mask-rcnn_r18-tiny_fpn_oid.py',
    '../_base_/datasets/oid-instance_cpu-256.py',
    '../_base_/schedules/cpu-tiny.py',
    '../_base_/oid-runtime.py',
]
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=200, max_keep_ckpts=2))
log_processor = dict(window_size=10)
