# Fine-tuning stage 2: LR / 3, constant, from stage 1's last checkpoint (a work dir is resolved to the
# checkpoint named in its last_checkpoint file).
_base_ = './cascade-mask-rcnn_x101-64x4d_fpn_oid-leaf.py'
max_iters = 100000
train_cfg = dict(max_iters=max_iters, val_interval=25000)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=max_iters)]
optim_wrapper = dict(optimizer=dict(lr=0.005 / 3))  # stage 1's base_lr / 3
load_from = 'work_dirs/cascade-mask-rcnn_x101-64x4d_fpn_oid-leaf'
