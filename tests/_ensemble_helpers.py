"""Shared by the ensemble tests: slim detectors with random weights that still rank things, and images.

mmdet initialises the classification layers with std 0.01, so an untrained model scores every class
~1/276 and every anchor ~0.5: ties everywhere, and comparisons would hinge on tie-breaking. Re-drawing
the last layers with a larger spread (from a fixed seed) gives distinct scores, boxes and masks.
"""
from __future__ import annotations

import os
import warnings
from contextlib import contextmanager

import cv2
import numpy as np
import torch

TINY = 'configs/tiny/cascade-mask-rcnn_r18-tiny_fpn_oid-leaf.py'
TINY_SCALE = (256, 256)
FEW_CLASSES = 12
SPREAD = {'fc_cls': 0.5, 'rpn_cls': 0.5, 'conv_logits': 0.5, 'fc_reg': 0.05, 'rpn_reg': 0.05}


@contextmanager
def one_thread():
    """Torch on one thread: on a shared 2-core machine two OpenMP threads that wait for each other
    at every barrier are several times slower than one (and the subprocesses get OMP_NUM_THREADS=1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def subprocess_env(**extra) -> dict:
    return dict(os.environ, OMP_NUM_THREADS='1', **extra)


def spread_heads(model, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            std = next((s for key, s in SPREAD.items() if key in name), None)
            if std is not None:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def tiny_detector(seed: int, num_classes: int | None = FEW_CLASSES, max_per_img: int = 10):
    """The slim config, random weights from ``seed``. Few classes and detections by default: the mask
    heads' per-class logits dominate a CPU prediction, and the properties tested do not need 275."""
    from mmdet.apis import init_detector

    from mmdet_ext.launch import load_config
    options = {} if num_classes is None else {'model.roi_head.num_classes': num_classes}
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')     # "checkpoint is None, use COCO classes"
        model = init_detector(load_config(TINY, options), checkpoint=None, device='cpu')
    spread_heads(model, seed)
    model.test_cfg.rcnn.score_thr = 0.0
    model.test_cfg.rcnn.max_per_img = max_per_img
    return model


def save_checkpoint(model, path: str) -> str:
    """As mmengine saves one: the weights and the class names in the meta data."""
    classes = tuple(f'class{i}' for i in range(model.roi_head.bbox_head[0].num_classes))
    meta = {'dataset_meta': {'classes': classes}}
    torch.save({'state_dict': model.state_dict(), 'meta': meta}, path)
    return path


def shapes_image(seed: int, width: int = 230, height: int = 150) -> np.ndarray:
    """A BGR image: noisy background and a few filled shapes of random colours."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    for _ in range(3):
        colour = tuple(int(c) for c in rng.integers(80, 256, 3))
        x, y = int(rng.integers(10, width - 40)), int(rng.integers(10, height - 40))
        size = int(rng.integers(15, 40))
        if rng.random() < 0.5:
            cv2.circle(img, (x + size // 2, y + size // 2), size // 2, colour, -1)
        else:
            cv2.rectangle(img, (x, y), (x + size, y + int(size * 0.7)), colour, -1)
    return img


def write_images(folder: str, count: int, ext: str = '.jpg', seed: int = 0) -> list[dict]:
    """``count`` images in ``folder`` -> data_list items of a test annotation file (no instances)."""
    os.makedirs(folder, exist_ok=True)
    items = []
    for i in range(count):
        img = shapes_image(seed + i, width=200 + 10 * i, height=150 - 5 * i)
        image_id = f'{seed + i:016x}'
        cv2.imwrite(os.path.join(folder, image_id + ext), img)
        items.append({'img_id': image_id, 'img_path': image_id + ext, 'width': img.shape[1],
                      'height': img.shape[0], 'instances': []})
    return items


def leaf_metainfo() -> dict:
    from util.common.hierarchy import load_default
    from util.data.annotations import make_metainfo
    return make_metainfo(load_default(), 'leaf')


def damage(path: str, kind: str) -> None:
    """A JPEG cut to half its bytes, with garbage over its header tables, or with a stray start-of-image
    marker amid its compressed data. OpenCV decodes the first and the last with only a warning on
    stderr (grey or garbled pixels); PIL refuses all three."""
    with open(path, 'rb') as f:
        data = bytearray(f.read())
    if kind == 'truncated':
        data = data[:len(data) // 2]
    elif kind == 'garbage header':
        data[2:202] = np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8).tobytes()
    else:
        middle = len(data) // 2
        data[middle:middle + 2] = b'\xff\xd8'
    with open(path, 'wb') as f:
        f.write(bytes(data))


def write_ensemble(path, members, flip: bool = False, fusion: str = 'SharedProposals') -> str:
    """An ensemble config file of ``members`` (name, config, checkpoint) at one small view (160 x 128, and
    its mirror with ``flip``), every detection down to score 0 kept, at most 20 per image."""
    rows = ',\n'.join(f'    dict(name={n!r}, config={c!r}, checkpoint={k!r})' for n, c, k in members)
    with open(path, 'w') as f:
        f.write(f"members = [\n{rows}]\nviews = dict(scales=[(160, 128)], flip={flip!r})\n"
                f"fusion = dict(type={fusion!r})\ntest_cfg = dict(score_thr=0.0, max_per_img=20)\n")
    return str(path)


def shared(models, scales, flip=False, weights=None, **params):
    """The shared-proposal fusion as the ensemble runner builds it, from plain members."""
    from mmdet_ext.ensemble import FUSIONS, Member, view_specs
    weights = weights or [1.0] * len(models)
    members = [Member(m, float(w)) for m, w in zip(models, weights)]
    return FUSIONS.build(dict(type='SharedProposals', **params),
                         default_args=dict(members=members, views=view_specs(scales, flip), num_classes=None,
                                           score_thr=None, iou_thr=None, max_per_img=None, mask_thr=None))
