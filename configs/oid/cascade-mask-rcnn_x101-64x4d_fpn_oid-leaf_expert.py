# Class-subset expert of the leaf model (L1): the fully trained leaf model (after stage 3) fine-tuned on a
# subset of its classes, e.g. the 100 rarest (data/subsets/leaf-rare-100.txt), as the 2019 teams' experts.
# It starts from the leaf model with the head rows of the subset selected, so it begins as the full model
# restricted to those classes:
#   python tools/convert_pretrained.py work_dirs/cascade-mask-rcnn_x101-64x4d_fpn_oid-leaf_stage3/iter_50000.pth \
#       weights/x101-leaf-rare-100-init.pth --from-classes leaf --to-classes data/subsets/leaf-rare-100.txt
#   python -m util.data.build ... --subset data/subsets/leaf-rare-100.txt --out D/annotations/leaf-rare-100-train.pkl
#   python -m util.data.rebalance D/annotations/leaf-rare-100-train.pkl \
#       --out D/annotations/leaf-rare-100-train-balanced.npy        # auto: leaf bands scaled to 100 classes
# Another class list: --cfg-options model.roi_head.num_classes=N load_from=... and the annotation files.
_base_ = './cascade-mask-rcnn_x101-64x4d_fpn_oid-leaf_stage3.py'

num_classes = 100
subset_name = 'leaf-rare-100'
load_from = f'weights/x101-{subset_name}-init.pth'

model = dict(roi_head=dict(num_classes=num_classes))

train_dataloader = dict(dataset=dict(ann_file=f'annotations/{subset_name}-train.pkl',
                                     index_file=f'annotations/{subset_name}-train-balanced.npy'))
val_dataloader = dict(dataset=dict(ann_file=f'annotations/{subset_name}-val.pkl'))
test_dataloader = val_dataloader

# Shorter than a stage and at stage 2's lr (stage 1's / 3) for the first 3/4, then stage 3's (/ 15): the
# expert sees only its classes' images, a tenth of the leaf model's epoch.
max_iters = 40000
train_cfg = dict(max_iters=max_iters, val_interval=10000)
param_scheduler = [dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
                        milestones=[int(max_iters * 0.75)], gamma=0.2),
                   dict(type='ConstantLR', factor=1 / 3, by_epoch=False, begin=0, end=max_iters + 1)]
