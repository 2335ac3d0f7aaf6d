# The reference's leaf ensemble (275 classes): three Cascade Mask R-CNNs x 2 scales x flip = 12 passes.
# Checkpoints are where weights/README.md says to put them; override with --checkpoints A B C.
_base_ = ['./_base_/reference-tta.py']
members = [
    dict(name='l1-x101', config='configs/oid/cascade-mask-rcnn_x101-64x4d_fpn_oid-leaf_stage3.py',
         checkpoint='weights/l1.pth'),
    dict(name='l2-r101-dcn', config='configs/oid/cascade-mask-rcnn_r101-dconv-c3-c5_fpn_oid-leaf_stage3.py',
         checkpoint='weights/l2.pth'),
    dict(name='l3-x101-dcn', config='configs/oid/cascade-mask-rcnn_x101-64x4d-dconv-c5_fpn_amp_oid-leaf_stage3.py',
         checkpoint='weights/l3.pth'),
]
