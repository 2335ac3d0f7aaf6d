# L2: ResNet-101 with deformable convolutions in stages c3-c5, on the 275 leaf classes.
_base_ = './cascade-mask-rcnn_r50_fpn_oid-leaf.py'
model = dict(
    backbone=dict(
        depth=101,
        dcn=dict(type='DCN', deform_groups=1, fallback_on_stride=False),
        stage_with_dcn=(False, True, True, True),
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))
