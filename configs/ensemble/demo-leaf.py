# The demo's heterogeneous leaf ensemble: a slim Cascade Mask R-CNN and a slim Mask R-CNN, fused through
# shared proposals. Checkpoints may be work dirs (their last_checkpoint); scripts/demo.sh passes them.
_base_ = ['./_base_/demo-tta.py']
members = [
    dict(name='cascade', config='configs/tiny/cascade-mask-rcnn_r18-tiny_fpn_oid-leaf.py',
         checkpoint='work_dirs/demo/models/leaf-a'),
    dict(name='mask-rcnn', config='configs/tiny/mask-rcnn_r18-tiny_fpn_oid-leaf.py',
         checkpoint='work_dirs/demo/models/leaf-b'),
]
