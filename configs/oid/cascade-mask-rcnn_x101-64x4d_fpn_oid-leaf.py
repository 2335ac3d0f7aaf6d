# L1: ResNeXt-101 64x4d FPN on the 275 leaf classes.
_base_ = './cascade-mask-rcnn_r50_fpn_oid-leaf.py'
model = dict(
    backbone=dict(
        type='ResNeXt',
        depth=101,
        groups=64,
        base_width=4,
        init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://resnext101_64x4d')))
