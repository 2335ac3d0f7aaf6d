"""Time the late-fusion step (``mmdet_ext.ensemble.late``) at real size, without the models.

Per image, ``--lists`` member x views (default 12) each give ``--dets`` instances (120) of a
``--width`` x ``--height`` image (1024 x 768): the same ~0.8 x dets objects seen by every list with
jittered boxes, masks and scores, mostly under their own label among ``--classes`` (275), the rest
confusions. They are fused as the ``WBF`` fusion does (ensemble-boxes per class, then the cluster masks of
non-R-CNN members averaged and thresholded), timed apart: ``wbf_s`` (box fusion), ``masks_s`` (clusters
and masks, of which ``crop_s`` is cutting each member x view's full-size masks to their extents). The
last line is machine-readable:

    late_fusion_s_per_img=... wbf_s=... masks_s=... crop_s=... lists=12 dets=120

    python tools/analysis_tools/benchmark_late_fusion.py [--images 5] [--lists 12] [--dets 120]
        [--width 1024] [--height 768] [--classes 275] [--max-per-img 120] [--seed 0]

``late_fusion_section(args)`` returns the numbers for ``benchmark_fusion.py`` to print as its section.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import cv2
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from util.common.cli import run


def add_late_fusion_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--images', type=int, default=5)
    p.add_argument('--lists', type=int, default=12, help='member x views per image')
    p.add_argument('--dets', type=int, default=120, help='instances per member x view')
    p.add_argument('--width', type=int, default=1024)
    p.add_argument('--height', type=int, default=768)
    p.add_argument('--classes', type=int, default=275)
    p.add_argument('--max-per-img', type=int, default=120)
    p.add_argument('--seed', type=int, default=0)


def synthetic_predictions(rng, lists: int, dets: int, width: int, height: int, classes: int):
    """One image's member x view predictions (``late.ViewPrediction``, their masks still full size) with
    elliptic masks."""
    import torch

    from mmdet_ext.ensemble.late import ViewPrediction
    n_obj = max(1, int(dets * 0.8))
    size = rng.uniform(0.03, 0.35, (n_obj, 2)) * [width, height]
    centre = rng.uniform(0, 1, (n_obj, 2)) * [width, height]
    label = rng.integers(0, classes, n_obj)
    preds = []
    for t in range(lists):
        objects = np.concatenate([rng.permutation(n_obj), rng.integers(0, n_obj, dets)])[:dets]
        c = centre[objects] + rng.normal(0, 0.03, (dets, 2)) * size[objects]
        s = size[objects] * rng.uniform(0.9, 1.1, (dets, 2))
        boxes = np.clip(np.concatenate([c - s / 2, c + s / 2], 1), 0, [width, height, width, height])
        labels = np.where(rng.random(dets) < 0.85, label[objects], rng.integers(0, classes, dets))
        masks = np.zeros((dets, height, width), np.uint8)
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            centre_px = (round((x0 + x1) / 2), round((y0 + y1) / 2))
            axes = (max(1, int((x1 - x0) / 2)), max(1, int((y1 - y0) / 2)))
            cv2.ellipse(masks[i], centre_px, axes, 0, 0, 360, 1, -1)
        masks = masks.astype(bool)
        scores = rng.beta(0.7, 2.0, dets).astype(np.float32)
        order = np.argsort(-scores)
        preds.append((ViewPrediction(t // 4, 1.0, torch.from_numpy(boxes[order]).float(),
                                     torch.from_numpy(scores[order]), torch.from_numpy(labels[order]), None),
                      torch.from_numpy(masks[order])))
    return preds


def late_fusion_section(args) -> dict:
    """Mean seconds per image of WBF, of the masks, and of both."""
    import torch

    from mmdet_ext.ensemble.late import (
        assign_clusters,
        crop_masks,
        finish,
        fuse_masks,
        fuse_wbf,
    )
    from mmdet_ext.ensemble.members import ClassMap
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    members = (args.lists + 3) // 4
    classes = ClassMap.full(args.classes, members)
    wbf_s = masks_s = crop_s = 0.0
    for _ in range(args.images):
        preds = synthetic_predictions(rng, args.lists, args.dets, args.width, args.height, args.classes)
        start = time.perf_counter()
        for pred, full in preds:            # done by late.predict_view as each member x view predicts
            pred.masks = crop_masks(full)
        preds = [pred for pred, _ in preds]
        crop_s += time.perf_counter() - start
        start = time.perf_counter()
        boxes, scores, labels = fuse_wbf(preds, classes, args.width, args.height)
        keep = finish(scores, 0.0, args.max_per_img)
        wbf_s += time.perf_counter() - start
        start = time.perf_counter()
        clusters = assign_clusters(preds, boxes, labels, 0.55)
        clusters = [clusters[i] for i in keep.tolist()]
        masks = fuse_masks(preds, [], classes, boxes[keep], labels[keep], clusters, args.height, args.width,
                           0.5, np.zeros(args.classes))
        masks_s += time.perf_counter() - start
        assert masks.shape == (len(keep), args.height, args.width)
    n = max(1, args.images)
    return dict(late_fusion_s_per_img=(wbf_s + masks_s + crop_s) / n, wbf_s=wbf_s / n,
                masks_s=(masks_s + crop_s) / n, crop_s=crop_s / n)


def format_section(numbers: dict, args) -> str:
    return (f"late_fusion_s_per_img={numbers['late_fusion_s_per_img']:.3f} wbf_s={numbers['wbf_s']:.3f} "
            f"masks_s={numbers['masks_s']:.3f} crop_s={numbers['crop_s']:.3f} lists={args.lists} "
            f"dets={args.dets}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_late_fusion_args(p)
    args = p.parse_args(argv)
    print(format_section(late_fusion_section(args), args))


if __name__ == '__main__':
    run(main)
