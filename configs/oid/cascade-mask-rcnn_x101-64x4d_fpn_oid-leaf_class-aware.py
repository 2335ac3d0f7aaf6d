# L1 with mmdetection's ClassAwareSampler instead of the reference's banded index list: each draw picks a
# class uniformly, then an image of that class.
_base_ = './cascade-mask-rcnn_x101-64x4d_fpn_oid-leaf.py'
train_dataloader = dict(
    sampler=dict(_delete_=True, type='ClassAwareSampler', num_sample_class=1),
    dataset=dict(index_file=None))
