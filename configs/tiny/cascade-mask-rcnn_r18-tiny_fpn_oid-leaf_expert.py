# Slim class-subset expert: the slim leaf cascade fine-tuned on a subset of its classes, starting from a
# trained slim leaf model whose head rows of the subset were selected (tools/convert_pretrained.py):
#   python -m util.data.subsets --rarest 5 --annotations D/annotations/leaf-train.pkl --out D/rare.txt
#   python -m util.data.build ... --subset D/rare.txt --out D/annotations/expert-train.pkl   (and -val)
#   python -m util.data.rebalance D/annotations/expert-train.pkl --out D/annotations/expert-train-balanced.npy
#   python tools/convert_pretrained.py leaf.pth expert-init.pth --from-classes leaf --to-classes D/rare.txt
#   python tools/train.py THIS --cfg-options data_root=D/ load_from=expert-init.pth model.roi_head.num_classes=5
# The class count must be the list's: override it with model.roi_head.num_classes=N (the variable below is
# substituted when this file is read, so overriding the variable itself would not reach the model).
_base_ = './cascade-mask-rcnn_r18-tiny_fpn_oid-leaf.py'

num_classes = 100                   # data/subsets/leaf-rare-100.txt
load_from = 'work_dirs/expert/expert-init.pth'   # the converted checkpoint; set it with --cfg-options

model = dict(roi_head=dict(num_classes=num_classes))

train_dataloader = dict(dataset=dict(ann_file='annotations/expert-train.pkl',
                                     index_file='annotations/expert-train-balanced.npy'))
val_dataloader = dict(dataset=dict(ann_file='annotations/expert-val.pkl'))
test_dataloader = val_dataloader

# Fine-tuning, not training from scratch: a quarter of the slim schedule at a fifth of its lr, a short
# warm-up (the selected heads are already trained), x0.1 for the last 20%.
max_iters = 100
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=10),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters, milestones=[int(max_iters * 0.8)],
         gamma=0.1),
]
optim_wrapper = dict(optimizer=dict(lr=0.002))
default_hooks = dict(checkpoint=dict(interval=max_iters))
