# Fine-tuning stage 3: stage 1's lr / 15, constant, from stage 2's last checkpoint (the optimizer keeps
# stage 1's lr, the schedule scales it: see stage 2).
_base_ = './cascade-mask-rcnn_r101-dconv-c3-c5_fpn_oid-leaf_stage2.py'
max_iters = 50000
train_cfg = dict(max_iters=max_iters)
param_scheduler = [dict(type='ConstantLR', factor=1 / 15, by_epoch=False, begin=0,
                        end=max_iters + 1)]  # ConstantLR gives the lr back at end - 1: after the run
load_from = 'work_dirs/cascade-mask-rcnn_r101-dconv-c3-c5_fpn_oid-leaf_stage2'
