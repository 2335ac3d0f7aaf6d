# Fine-tuning stage 2: stage 1's lr / 3, constant, from stage 1's last checkpoint (a work dir is resolved
# to the checkpoint named in its last_checkpoint file). The optimizer keeps stage 1's lr and the schedule
# scales it, so changing the base schedule's lr (or --auto-scale-lr) moves this stage with it.
_base_ = './cascade-mask-rcnn_r101-dconv-c3-c5_fpn_oid-leaf.py'
max_iters = 100000
train_cfg = dict(max_iters=max_iters, val_interval=25000)
param_scheduler = [dict(type='ConstantLR', factor=1 / 3, by_epoch=False, begin=0,
                        end=max_iters + 1)]  # ConstantLR gives the lr back at end - 1: after the run
load_from = 'work_dirs/cascade-mask-rcnn_r101-dconv-c3-c5_fpn_oid-leaf'
