# The demo's parent model (23 classes) x 2 scales x flip.
_base_ = ['./_base_/demo-tta.py']
members = [
    dict(name='parent', config='configs/tiny/cascade-mask-rcnn_r18-tiny_fpn_oid-parent.py',
         checkpoint='work_dirs/demo/models/parent'),
]
