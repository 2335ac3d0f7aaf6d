"""Reports of an evaluation: the per-class table and the pictures.

    write_per_class(path, result, names)   CSV: LabelName, Name, AP, CountedGT, Detections (one row per class)
    write_plots(out_dir, result, names)    ap_per_class.png (bars, best first) and pr_curves_NN.png (a grid
                                           of precision-recall curves, 20 classes per page; the shaded
                                           area under the monotone envelope is the AP)

AP is empty for a class without counted GT. Detections = detections of the class that reached matching
(in images where the class is evaluatable, non-empty masks, at most 10,000 per image).
"""
from __future__ import annotations

import csv
import math
import os

import numpy as np

from ..common.atomic import AtomicWriter

PER_PAGE = 20


def write_per_class(path: str, result, names: dict) -> None:
    with AtomicWriter(path) as f:
        w = csv.writer(f, lineterminator='\n')
        w.writerow(['LabelName', 'Name', 'AP', 'CountedGT', 'Detections'])
        for c, mid in enumerate(result.mids):
            ap = result.ap[c]
            w.writerow([mid, names.get(mid, mid), '' if math.isnan(ap) else f'{ap:.10f}',
                        int(result.counted_gt[c]), int(result.detections[c])])


def _scored(result):
    """Classes with counted GT, best AP first (then class order)."""
    valid = np.flatnonzero(~np.isnan(result.ap))
    return sorted(valid.tolist(), key=lambda c: (-result.ap[c], c))


def write_plots(out_dir: str, result, names: dict) -> list[str]:
    """Write the PNGs (matplotlib, Agg backend); returns their paths."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    order = _scored(result)
    label = [names.get(result.mids[c], result.mids[c]) for c in order]
    paths = []

    fig, ax = plt.subplots(figsize=(8, max(2.0, 0.18 * len(order) + 1)))
    ax.barh(range(len(order)), [result.ap[c] for c in order], color='tab:blue')
    ax.set_yticks(range(len(order)), label, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel('AP@0.5 IoU')
    ax.set_title(f'mAP@0.5IOU = {result.mean_ap:.4f} over {len(order)} classes')
    fig.tight_layout()
    paths.append(os.path.join(out_dir, 'ap_per_class.png'))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    for page, start in enumerate(range(0, len(order), PER_PAGE)):
        chunk = order[start:start + PER_PAGE]
        fig, axes = plt.subplots(4, 5, figsize=(15, 12), squeeze=False)
        for ax, c in zip(axes.flat, chunk):
            precision, recall = result.curves[c]
            if precision.size:
                envelope = np.maximum.accumulate(precision[::-1])[::-1]   # what the AP integrates
                ax.fill_between(np.r_[0.0, recall], np.r_[envelope[0], envelope], step='pre', alpha=0.25)
                ax.plot(recall, precision, lw=0.8)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.set_title(f'{names.get(result.mids[c], result.mids[c])[:28]}  AP {result.ap[c]:.3f}', fontsize=8)
            ax.tick_params(labelsize=6)
        for ax in list(axes.flat)[len(chunk):]:
            ax.axis('off')
        fig.supxlabel('recall')
        fig.supylabel('precision')
        fig.tight_layout()
        paths.append(os.path.join(out_dir, f'pr_curves_{page:02d}.png'))
        fig.savefig(paths[-1], dpi=80)
        plt.close(fig)
    return paths
