# P1 trained federatedly (configs/_base_/oid_federated.py), sampling frequencies of the 23 parent classes.
# Needs parent annotation files built with util.data.build --subset parent --bbox-csv ... --labels-csv ...
_base_ = ['./cascade-mask-rcnn_x101-64x4d_fpn_oid-parent.py', '../_base_/oid_federated.py']
model = dict(roi_head=dict(_base_.federated_roi_head, loss_cls=dict(_base_.federated_loss, freq_subset='parent')),
             train_cfg=dict(rpn=dict(assigner=_base_.federated_rpn_assigner)))
train_pipeline = _base_.train_pipeline[:-1] + [dict(type='PackDetInputs', meta_keys=_base_.federated_meta_keys)]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
