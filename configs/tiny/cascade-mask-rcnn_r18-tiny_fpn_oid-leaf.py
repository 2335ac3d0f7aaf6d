# Slim leaf model (275 classes) for CPU: tests and the demo train it on the synthetic dataset.
_base_ = [
    '../_base_/models/cascade-mask-rcnn_r18-tiny_fpn_oid.py',
    '../_base_/datasets/oid-instance_cpu-256.py',
    '../_base_/schedules/cpu-tiny.py',
    '../_base_/oid-runtime.py',
]
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=200, max_keep_ckpts=2))
log_processor = dict(window_size=10)
