# The reference's optimisation: SGD lr 0.005 for 4 GPUs x 1 image (auto-scaled for other batch sizes),
# gradient clipping at 35, an iteration-based schedule with periodic checkpoints and validation.
base_lr = 0.005  # for 4 GPUs x 1 image
max_iters = 600000
val_interval = 50000
train_cfg = dict(type='ResumableIterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(max_iters * 0.75), int(max_iters * 0.92)], gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=base_lr, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=35, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=4)
