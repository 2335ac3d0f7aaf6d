# L1 with mmengine's ClassBalancedDataset (repeat factor sampling, LVIS-style) instead of the reference's
# banded index list: images of rare classes are repeated until each class's frequency reaches the threshold.
_base_ = './cascade-mask-rcnn_x101-64x4d_fpn_oid-leaf.py'
train_dataloader = dict(
    sampler=dict(shuffle=True),
    dataset=dict(
        _delete_=True,
        type='ClassBalancedDataset',
        oversample_thr=1e-3,
        dataset={{_base_.train_dataset}}))
