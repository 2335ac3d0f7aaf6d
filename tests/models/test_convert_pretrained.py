"""tools/convert_pretrained.py on a real (tiny) COCO-shaped mmdetection model."""
import torch
from conftest import TINY_LEAF, run_cli
from mmengine.runner import load_checkpoint

from mmdet_ext.launch import load_config
from util.common.hierarchy import load_default


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
