"""tools/convert_pretrained.py on real (tiny) mmdetection models: COCO -> Open Images, and a full model
-> a class-subset expert whose per-class outputs are the full model's (cascade, Mask R-CNN, RTMDet-Ins)."""
import random

import pytest
import torch
from conftest import TINY_LEAF, run_cli
from mmengine.runner import load_checkpoint

from mmdet_ext.convert_pretrained import convert_checkpoint
from mmdet_ext.launch import load_config
from util.common.hierarchy import load_default, subset_classes


def build(num_classes, seed):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = load_config(TINY_LEAF)
    cfg.model.roi_head.num_classes = num_classes
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def test_coco_rows_copied_and_checkpoint_loads_strictly(tmp_path):
    coco = build(80, seed=1)
    src = tmp_path / 'coco.pth'
    torch.save({'state_dict': coco.state_dict(), 'meta': {'dataset_meta': {'classes': ['person'] * 80}}}, src)
    dst = tmp_path / 'oid-leaf.pth'
    proc = run_cli(['tools/convert_pretrained.py', str(src), str(dst), '--subset', 'leaf'])
    assert 'cat -> /m/01yrx' in proc.stdout and 'wrote' in proc.stdout

    leaf = build(275, seed=2)
    load_checkpoint(leaf, str(dst), map_location='cpu', strict=True)  # shapes match the 275-class model
    h = load_default()
    cat, toaster = h.leaves.index('/m/01yrx'), h.leaves.index('/m/01k6s3')
    unmapped = h.leaves.index('/m/01bms0')  # Screwdriver has no COCO class
    for s in range(3):
        new_w = leaf.roi_head.bbox_head[s].fc_cls.weight
        old_w = coco.roi_head.bbox_head[s].fc_cls.weight
        assert torch.equal(new_w[cat], old_w[15]) and torch.equal(new_w[toaster], old_w[70])
        assert torch.equal(new_w[275], old_w[80])  # background row
        assert not any(torch.equal(new_w[unmapped], row) for row in old_w)
        new_m = leaf.roi_head.mask_head[s].conv_logits.weight
        assert torch.equal(new_m[cat], coco.roi_head.mask_head[s].conv_logits.weight[15])
    # Everything that is not class-specific is carried over unchanged.
    assert torch.equal(leaf.backbone.conv1.weight, coco.backbone.conv1.weight)
    assert torch.equal(leaf.roi_head.bbox_head[1].shared_fcs[0].weight, coco.roi_head.bbox_head[1].shared_fcs[0].weight)


def test_parent_subset_gets_person(tmp_path):
    coco = build(80, seed=1)
    src = tmp_path / 'coco.pth'
    torch.save({'state_dict': coco.state_dict()}, src)
    proc = run_cli(['tools/convert_pretrained.py', str(src), str(tmp_path / 'p.pth'), '--subset', 'parent'])
    assert 'person -> /m/01g317' in proc.stdout and '23 classes' in proc.stdout


def test_not_a_coco_checkpoint_is_a_one_line_error(tmp_path):
    leaf = build(275, seed=0)
    src = tmp_path / 'leaf.pth'
    torch.save({'state_dict': leaf.state_dict()}, src)
    proc = run_cli(['tools/convert_pretrained.py', str(src), str(tmp_path / 'x.pth')], check=False)
    assert proc.returncode != 0 and 'no class-specific head tensors for 80 classes' in proc.stderr
    assert not (tmp_path / 'x.pth').exists()


# ---- full model -> class-subset expert --------------------------------------------------------------------
TINY_RTMDET = 'configs/tiny/rtmdet-ins_tiny_oid-leaf.py'
TINY_FEDERATED = 'configs/tiny/cascade-mask-rcnn_r18-tiny_fpn_oid-leaf_federated.py'   # no background logit
SLIM_MASK_RCNN = """
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'
model = dict(
    backbone=dict(depth=18, base_channels=32, init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=32),
        bbox_head=dict(in_channels=32, fc_out_channels=64, num_classes=275, reg_class_agnostic=False),
        mask_roi_extractor=dict(out_channels=32),
        mask_head=dict(num_convs=1, in_channels=32, conv_out_channels=32, num_classes=275)))
"""


def model_cfg(kind, num_classes, tmp_path):
    if kind == 'mask-rcnn':
        path = tmp_path / 'mask-rcnn-slim.py'
        path.write_text(SLIM_MASK_RCNN)
        cfg = load_config(str(path))
        cfg.model.roi_head.bbox_head.num_classes = num_classes
        cfg.model.roi_head.mask_head.num_classes = num_classes
        return cfg
    if kind == 'rtmdet':
        return load_config(TINY_RTMDET, {'model.bbox_head.num_classes': num_classes})
    cfg = load_config(TINY_FEDERATED if kind == 'federated' else TINY_LEAF, {'model.roi_head.num_classes': num_classes})
    if kind == 'cascade-class-specific-reg':
        for head in cfg.model.roi_head.bbox_head:
            head.reg_class_agnostic = False
    return cfg


def build_model(kind, num_classes, seed, tmp_path):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    torch.manual_seed(seed)
    model = MODELS.build(model_cfg(kind, num_classes, tmp_path).model)
    model.init_weights()
    # Re-draw the class-specific layers with a wide spread: with mmdet's init all rows are nearly equal, and a
    # wrong row would pass for the right one.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(k in name for k in ('fc_cls', 'fc_reg', 'conv_logits', 'rtm_cls')):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


def head_outputs(model, image, rois):
    """Per head: class scores, box deltas and mask logits (RoI models, on fixed RoIs), or per level the class
    scores, boxes and mask kernels (RTMDet), as plain tensors."""
    with torch.no_grad():
        feats = model.extract_feat(image)
        if hasattr(model, 'bbox_head'):    # single-stage
            cls_scores, bbox_preds, kernels, mask_feat = model.bbox_head(feats)
            return [{'dense': c, 'box': b, 'kernel': k} for c, b, k in zip(cls_scores, bbox_preds, kernels)] \
                + [{'mask_feat': mask_feat}]
        head = model.roi_head
        if hasattr(head, 'num_stages'):
            calls = [(lambda s=s: head._bbox_forward(s, feats, rois), lambda s=s: head._mask_forward(s, feats, rois))
                     for s in range(head.num_stages)]
        else:
            calls = [(lambda: head._bbox_forward(feats, rois), lambda: head._mask_forward(feats, rois))]
        return [{'cls': b()['cls_score'], 'reg': b()['bbox_pred'], 'mask': m()['mask_preds']} for b, m in calls]


def assert_expert_equals_full_on_subset(full_out, expert_out, rows, num_full):
    sel = torch.tensor(rows)
    close = dict(rtol=1e-5, atol=1e-5)
    assert len(full_out) == len(expert_out)
    for f, e in zip(full_out, expert_out):
        for key, fv in f.items():
            ev = e[key]
            if key == 'cls':
                background = [num_full] if fv.shape[1] == num_full + 1 else []
                assert ev.shape[1] == len(rows) + len(background)
                assert torch.allclose(ev, fv[:, torch.cat([sel, torch.tensor(background, dtype=torch.long)])], **close)
            elif key == 'reg' and fv.shape[1] == 4 * num_full:
                assert torch.allclose(ev.view(len(ev), -1, 4), fv.view(len(fv), num_full, 4)[:, sel], **close)
            elif key in ('mask', 'dense'):
                assert torch.allclose(ev, fv[:, sel], **close)
            else:                            # class-agnostic: boxes, mask kernels and features unchanged
                assert torch.allclose(ev, fv, **close)


def subset_file(tmp_path, count=7, seed=3):
    mids = random.Random(seed).sample(load_default().leaves, count)   # not in hierarchy order
    path = tmp_path / 'expert.txt'
    path.write_text('# an expert\n' + ''.join(f'{m}\n' for m in mids))
    return str(path)


@pytest.mark.parametrize('kind', ['cascade', 'cascade-class-specific-reg', 'federated', 'mask-rcnn', 'rtmdet'])
def test_expert_starts_as_the_full_model_on_its_classes(tmp_path, kind):
    h = load_default()
    classes = subset_file(tmp_path)
    expert_mids = subset_classes(h, classes)
    rows = [h.leaves.index(m) for m in expert_mids]
    full = build_model(kind, 275, seed=1, tmp_path=tmp_path)
    src, dst = tmp_path / 'leaf.pth', tmp_path / 'expert.pth'
    torch.save({'state_dict': full.state_dict(), 'meta': {}}, src)
    if kind == 'cascade':   # through the command line once; the library function for the other models
        proc = run_cli(['tools/convert_pretrained.py', str(src), str(dst), '--from-classes', 'leaf',
                        '--to-classes', classes])
        assert f'wrote {dst}: 7 classes' in proc.stdout and 'copied 7 source-model classes' in proc.stdout
    else:
        report = convert_checkpoint(str(src), str(dst), expert_mids, from_mids=h.leaves)
        assert len(report.copied) == 7 and report.converted_keys

    expert = build_model(kind, len(expert_mids), seed=2, tmp_path=tmp_path)
    result = expert.load_state_dict(torch.load(dst, map_location='cpu')['state_dict'], strict=False)
    assert not result.missing_keys and not result.unexpected_keys   # and every shape matched (else it raises)
    image = torch.randn(1, 3, 128, 160, generator=torch.Generator().manual_seed(0))
    rois = torch.tensor([[0, 4., 6., 90., 70.], [0, 30., 20., 150., 120.], [0, 60., 2., 100., 40.]])
    assert_expert_equals_full_on_subset(head_outputs(full, image, rois), head_outputs(expert, image, rois), rows, 275)


def test_expert_checkpoint_loads_into_the_expert_config(tmp_path):
    from mmengine.runner import load_checkpoint
    classes = subset_file(tmp_path, count=5)
    full = build_model('cascade', 275, seed=1, tmp_path=tmp_path)
    src, dst = tmp_path / 'leaf.pth', tmp_path / 'expert.pth'
    torch.save({'state_dict': full.state_dict()}, src)
    convert_checkpoint(str(src), str(dst), subset_classes(load_default(), classes), from_mids=load_default().leaves)
    from mmdet.registry import MODELS
    cfg = load_config('configs/tiny/cascade-mask-rcnn_r18-tiny_fpn_oid-leaf_expert.py',
                      {'model.roi_head.num_classes': 5, 'load_from': str(dst)})
    assert cfg.load_from == str(dst)
    assert cfg.optim_wrapper.optimizer.lr < load_config(TINY_LEAF).optim_wrapper.optimizer.lr
    expert = MODELS.build(cfg.model)
    load_checkpoint(expert, cfg.load_from, map_location='cpu', strict=True)
    assert expert.roi_head.bbox_head[2].fc_cls.out_features == 6
    assert torch.equal(expert.roi_head.mask_head[1].conv_logits.weight,
                       full.roi_head.mask_head[1].conv_logits.weight[
                           [load_default().leaves.index(m) for m in subset_classes(load_default(), classes)]])


def test_expert_of_classes_outside_the_source_model_is_refused(tmp_path):
    from util.common.errors import DataError
    h = load_default()
    full = build_model('cascade', 23, seed=1, tmp_path=tmp_path)
    src = tmp_path / 'parent.pth'
    torch.save({'state_dict': full.state_dict()}, src)
    leafy = subset_file(tmp_path, count=3)
    proc = run_cli(['tools/convert_pretrained.py', str(src), str(tmp_path / 'x.pth'), '--from-classes', 'parent',
                    '--to-classes', leafy], check=False)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        'error: 3 of the 3 target classes are not classes of the source model (' +
        ', '.join(subset_classes(h, leafy)) + ')']
    # The class count of the checkpoint must be the declared one.
    with pytest.raises(DataError, match='no class-specific head tensors for 275 classes'):
        convert_checkpoint(str(src), str(tmp_path / 'x.pth'), subset_classes(h, leafy), from_mids=h.leaves)
    assert not (tmp_path / 'x.pth').exists()


@pytest.mark.slow
def test_expert_fine_tunes_from_the_converted_leaf_model(synthetic_data, tmp_path):
    """The whole recipe on the synthetic data: class list -> expert annotation files -> rebalanced list ->
    converted checkpoint -> the expert config trains from it."""
    classes, ann = tmp_path / 'rare.txt', tmp_path / 'ann'
    run_cli(['-m', 'util.data.subsets', '--rarest', '3', '--annotations',
             str(synthetic_data / 'annotations/leaf-train.pkl'), '--out', str(classes)])
    for split, name in (('train', 'expert-train'), ('validation', 'expert-val')):
        masks_csv = synthetic_data / f'challenge-2019-{split}-segmentation-masks.csv'
        run_cli(['-m', 'util.data.build', '--masks-csv', str(masks_csv),
                 '--img-root', str(synthetic_data), '--subset', str(classes), '--no-progress',
                 '--out', str(ann / f'{name}.pkl')])
    run_cli(['-m', 'util.data.rebalance', str(ann / 'expert-train.pkl'),
             '--out', str(ann / 'expert-train-balanced.npy'), '--rounds', '1'])
    full = build_model('cascade', 275, seed=1, tmp_path=tmp_path)
    torch.save({'state_dict': full.state_dict()}, tmp_path / 'leaf.pth')
    run_cli(['tools/convert_pretrained.py', str(tmp_path / 'leaf.pth'), str(tmp_path / 'init.pth'),
             '--from-classes', 'leaf', '--to-classes', str(classes)])
    work = tmp_path / 'work'
    proc = run_cli(['tools/train.py', 'configs/tiny/cascade-mask-rcnn_r18-tiny_fpn_oid-leaf_expert.py',
                    '--work-dir', str(work), '--cfg-options', f'data_root={synthetic_data}/',
                    f'load_from={tmp_path / "init.pth"}', 'model.roi_head.num_classes=3',
                    f'train_dataloader.dataset.ann_file={ann / "expert-train.pkl"}',
                    f'train_dataloader.dataset.index_file={ann / "expert-train-balanced.npy"}',
                    f'val_dataloader.dataset.ann_file={ann / "expert-val.pkl"}',
                    f'test_dataloader.dataset.ann_file={ann / "expert-val.pkl"}',
                    'train_cfg.max_iters=2', 'train_cfg.val_interval=2', 'default_hooks.logger.interval=1'],
                   env={'OMP_NUM_THREADS': '1'})
    log = proc.stdout + proc.stderr
    assert f'Load checkpoint from {tmp_path / "init.pth"}' in log
    assert 'missing keys' not in log and 'unexpected key' not in log and 'size mismatch' not in log
    assert 'OID challenge metric' in log and (work / 'iter_2.pth').exists()
    trained = torch.load(work / 'iter_2.pth', map_location='cpu', weights_only=False)['state_dict']
    assert trained['roi_head.bbox_head.0.fc_cls.weight'].shape[0] == 4
