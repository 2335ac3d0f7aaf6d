# P1: ResNeXt-101 64x4d FPN on the 23 parent classes (every mask also counted for its ancestors).
_base_ = './cascade-mask-rcnn_x101-64x4d_fpn_oid-leaf.py'
model = dict(roi_head=dict(num_classes=23))
train_dataloader = dict(dataset=dict(ann_file='annotations/parent-train.pkl',
                                     index_file='annotations/parent-train-balanced.npy'))
val_dataloader = dict(dataset=dict(ann_file='annotations/parent-val.pkl'))
test_dataloader = val_dataloader
