# L1 trained federatedly (configs/_base_/oid_federated.py): box-only boxes are ignore regions, negatives
# only for verified / annotated classes plus a frequency sample. Needs annotation files built with
# util.data.build --bbox-csv ...-segmentation-bbox.csv --labels-csv ...-segmentation-labels.csv.
_base_ = ['./cascade-mask-rcnn_x101-64x4d_fpn_oid-leaf.py', '../_base_/oid_federated.py']
model = dict(roi_head=_base_.federated_roi_head,
             train_cfg=dict(rpn=dict(assigner=_base_.federated_rpn_assigner)))
train_pipeline = _base_.train_pipeline[:-1] + [dict(type='PackDetInputs', meta_keys=_base_.federated_meta_keys)]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
