# The reference's parent model (23 classes) x 2 scales x flip; run it on shards made with --subset parent.
_base_ = ['./_base_/reference-tta.py']
members = [
    dict(name='p1-x101', config='configs/oid/cascade-mask-rcnn_x101-64x4d_fpn_oid-parent_stage3.py',
         checkpoint='weights/p1.pth'),
]
