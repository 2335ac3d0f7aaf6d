# Open Images instance segmentation in the annotation files of `util.data.build`.
# Paths are relative to `data_root`; override them with --cfg-options, e.g.
#   train_dataloader.dataset.ann_file=annotations/leaf-train.pkl
dataset_type = 'OIDInstanceDataset'
data_root = 'data/oid/'
backend_args = None  # e.g. dict(backend='gcs') to read gs:// paths, see mmdet_ext.fileio

# The reference's recipe: long side 1333, short side 640-960, flip 0.5.
train_scales = [(1333, 640), (1333, 960)]
test_scale = (1333, 800)

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True, poly2mask=True),
    dict(type='RandomResize', scale=train_scales, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=test_scale, keep_ratio=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]

# The training images; the rebalancing scheme is chosen where the dataloader uses it (below, or a
# `*_class-balanced.py` / `*_class-aware.py` variant).
train_dataset = dict(
    type=dataset_type,
    data_root=data_root,
    ann_file='annotations/leaf-train.pkl',
    data_prefix=dict(img=''),
    filter_cfg=dict(filter_empty_gt=True, min_size=8),
    pipeline=train_pipeline,
    backend_args=backend_args)
train_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    # The reference's banded rebalancing: util.data.rebalance writes the epoch's list of image indices, already
    # shuffled and with repeats spread out, so it is read in order.
    sampler=dict(type='InfiniteSampler', shuffle=False),
    batch_sampler=dict(type='ResumableAspectRatioBatchSampler'),
    dataset=dict(train_dataset, index_file='annotations/leaf-train-balanced.npy'))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/leaf-val.pkl',
        data_prefix=dict(img=''),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

# The challenge metric on the held-out images, from Google's raw validation files (the held-out images are
# those the val dataloader feeds it). Hierarchy and class list default to the ones shipped in data/.
val_evaluator = dict(
    type='OIDChallengeMetric',
    data_root=data_root,
    masks_csv='challenge-2019-validation-segmentation-masks.csv',
    masks_dir='',  # holds validation-masks-{0..f}/
    bbox_csv='challenge-2019-validation-segmentation-bbox.csv',
    labels_csv='challenge-2019-validation-segmentation-labels.csv')
test_evaluator = val_evaluator
