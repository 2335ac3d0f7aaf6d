# L3: ResNeXt-101 64x4d with deformable convolutions in c5, mixed precision, on the 275 leaf classes.
# On a machine without CUDA, mmdet_ext.apply_device_defaults falls back to fp32.
_base_ = './cascade-mask-rcnn_x101-64x4d_fpn_oid-leaf.py'
model = dict(
    backbone=dict(
        dcn=dict(type='DCN', deform_groups=1, fallback_on_stride=False),
        stage_with_dcn=(False, False, False, True)))
optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')
