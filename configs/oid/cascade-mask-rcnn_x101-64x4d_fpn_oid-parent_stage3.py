# Fine-tuning stage 3: LR / 15, constant, from stage 2's last checkpoint.
_base_ = './cascade-mask-rcnn_x101-64x4d_fpn_oid-parent_stage2.py'
max_iters = 50000
train_cfg = dict(max_iters=max_iters)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=max_iters)]
optim_wrapper = dict(optimizer=dict(lr=0.005 / 15))  # stage 1's base_lr / 15
load_from = 'work_dirs/cascade-mask-rcnn_x101-64x4d_fpn_oid-parent_stage2'
