# Slim parent model (23 classes) for CPU: the demo's parent model.
_base_ = './cascade-mask-rcnn_r18-tiny_fpn_oid-leaf.py'
model = dict(roi_head=dict(num_classes=23))
train_dataloader = dict(dataset=dict(ann_file='annotations/parent-train.pkl',
                                     index_file='annotations/parent-train-balanced.npy'))
val_dataloader = dict(dataset=dict(ann_file='annotations/parent-val.pkl'))
test_dataloader = val_dataloader
