# Leaf model (275 classes) with a ResNet-50 backbone: the common base of the leaf and parent configs,
# and a cheaper baseline. The reference recipe: 4 GPUs x 1 image, SGD 0.005, clip 35, multi-scale.
_base_ = [
    '../_base_/models/cascade-mask-rcnn_r50_fpn_oid.py',
    '../_base_/datasets/oid-instance.py',
    '../_base_/schedules/oid-iter.py',
    '../_base_/oid-runtime.py',
]
