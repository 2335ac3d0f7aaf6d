"""A slow, literal statement of the challenge metric, to hold the fast evaluator against.

Dense float32 masks, plain loops, one rule per line, in the order the facts file states them. It shares
nothing with util.metric.rules but the hierarchy. Equal scores (``ties``) are ordered as the official
scorer orders them (``'official'``: numpy's argsort of the scores in input order, reversed, within an
image; the images' entries concatenated in ImageID order and argsorted the same way for the AP), or
``'fp-first'`` (stable score order within an image, false positives first in the AP). On exact overlap
ties the first GT in coordinate order wins.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

THRESHOLD = 0.5
EPS = np.float32(1e-7)


@dataclass
class LObject:
    label: str
    box: tuple            # normalised (xmin, xmax, ymin, ymax)
    group_of: bool
    mask: np.ndarray | None   # dense HxW uint8 at the image size, or None (box-only)


@dataclass
class LImage:
    height: int
    width: int
    objects: list = field(default_factory=list)
    image_labels: list = field(default_factory=list)     # (label, positive)
    detections: list = field(default_factory=list)       # (label, score, dense HxW uint8 mask)


def mask_area(m) -> np.float32:
    return np.sum(m, dtype=np.float32)


def mask_iou(d, g) -> np.float32:
    inter = np.sum(np.minimum(d, g), dtype=np.float32)
    union = mask_area(d) + mask_area(g) - inter
    return np.float32(inter / np.maximum(union, EPS))


def mask_ioa(d, g) -> np.float32:
    """Intersection over the detection's area."""
    inter = np.sum(np.minimum(d, g), dtype=np.float32)
    return np.float32(inter / (mask_area(d) + EPS))


def tight_box(m, h, w):
    """(ymin, xmin, ymax, xmax) normalised; last pixel + 1."""
    ys, xs = np.nonzero(m)
    return (float(ys.min()) / h, float(xs.min()) / w, float(ys.max() + 1) / h, float(xs.max() + 1) / w)


def _inter(a, b):
    hh = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ww = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return hh * ww


def _area(a):
    return (a[2] - a[0]) * (a[3] - a[1])


def box_iou(a, b):
    inter = _inter(a, b)
    return inter / (_area(a) + _area(b) - inter)


def box_ioa(det, gt):
    return _inter(det, gt) / _area(det)


def first_argmax(values):
    best = 0
    for k, v in enumerate(values):
        if v > values[best]:
            best = k
    return best


def by_score(scores, ties):
    """Indices of ``scores`` (in input order), highest first, equal ones ordered as ``ties`` says."""
    if ties == 'official':
        return [int(i) for i in np.argsort(np.asarray(scores, np.float64))[::-1]]
    return sorted(range(len(scores)), key=lambda i: -scores[i])          # sorted() is stable


def evaluate_image(img: LImage, classes: list, hierarchy, stats: dict | None = None, ties: str = 'official'):
    """-> None (no GT at all) or (entries {class: [(score, tp)]}, counted {class: n}, kept {class: n})."""
    if not img.objects and not img.image_labels:
        return None
    listed = set(classes)

    def up(label):
        return [label] + sorted(hierarchy.ancestors(label))

    def down(label):
        return [label] + sorted(hierarchy.descendants(label))

    # 1. expansion: every GT row is copied per ancestor; the evaluatable classes
    order = sorted(range(len(img.objects)), key=lambda k: (img.objects[k].box, img.objects[k].group_of, k))
    rows = []
    for k in order:
        o = img.objects[k]
        for label in up(o.label):
            if label in listed:
                rows.append((label, o))
    evaluatable = {label for label, _ in rows}
    for label, positive in img.image_labels:
        for e in (up(label) if positive else down(label)):
            if e in listed:
                evaluatable.add(e)

    # 2. counted GT: rows with a non-empty mask, group-of or not
    counted = {}
    for label, o in rows:
        if o.mask is not None and o.mask.sum() > 0:
            counted[label] = counted.get(label, 0) + 1

    # 3. detections: evaluatable class, non-empty mask, score above the NMS floor
    dets = [d for d in img.detections if d[0] in evaluatable and d[2].sum() > 0 and d[1] > -10]

    entries, kept = {}, {}
    for label in sorted({d[0] for d in dets}):
        mine = [d for d in dets if d[0] == label]
        mine = [mine[i] for i in by_score([d[1] for d in mine], ties)][:10000]
        kept[label] = len(mine)
        gts = [o for lab, o in rows if lab == label]
        has_mask = [o.mask is not None and o.mask.sum() > 0 for o in gts]
        a = [o for o, m in zip(gts, has_mask) if m and not o.group_of]
        b = [o for o, m in zip(gts, has_mask) if m and o.group_of]
        c = [o for o, m in zip(gts, has_mask) if not m and not o.group_of]
        d_ = [o for o, m in zip(gts, has_mask) if not m and o.group_of]
        n = len(mine)
        tp, ignored_box, ignored_group = [False] * n, [False] * n, [False] * n
        det_box = [tight_box(m, img.height, img.width) for _, _, m in mine]

        def gt_box(o):
            xmin, xmax, ymin, ymax = o.box
            return (ymin, xmin, ymax, xmax)

        def iou_stage(targets, overlap, is_box):
            taken = [False] * len(targets)
            for i in range(n):
                values = [overlap(i, t) for t in targets]
                g = first_argmax(values)
                if tp[i] or ignored_group[i] or not values[g] >= THRESHOLD:
                    continue
                if not taken[g]:
                    taken[g] = True
                    tp[i] = True
                    ignored_box[i] = is_box

        def ioa_stage(targets, overlap):
            best = [0.0] * len(targets)
            for i in range(n):
                values = [overlap(i, t) for t in targets]
                g = first_argmax(values)
                if tp[i] or ignored_group[i] or not values[g] >= THRESHOLD:
                    continue
                ignored_group[i] = True
                best[g] = max(best[g], mine[i][1])
            return best

        group_entries = []
        if a:
            iou_stage(a, lambda i, o: mask_iou(mine[i][2], o.mask), is_box=False)
        if b:
            group_entries = [(s, 1.0) for s in ioa_stage(b, lambda i, o: mask_ioa(mine[i][2], o.mask)) if s > 0]
        if c:
            iou_stage(c, lambda i, o: box_iou(det_box[i], gt_box(o)), is_box=True)
        if d_:
            ioa_stage(d_, lambda i, o: box_ioa(det_box[i], gt_box(o)))
        out = [(mine[i][1], 1.0 if tp[i] else 0.0) for i in range(n) if not ignored_box[i] and not ignored_group[i]]
        if stats is not None:                   # how often each rule fired, for the tests' coverage check
            fired = {'tp': any(e[1] > 0 for e in out), 'fp': any(e[1] == 0 for e in out),
                     'box_ignored': any(ignored_box), 'group_ignored': any(ignored_group),
                     'group_entries': bool(group_entries)}
            for key, hit in fired.items():
                stats[key] = stats.get(key, 0) + hit
        entries[label] = out + group_entries
    return entries, counted, kept


def average_precision(entries, num_gt: int, ties: str = 'official') -> float:
    """VOC all-points AP of (score, tp) entries (in ImageID order); equal scores ordered by ``ties``."""
    if ties == 'official':
        entries = [entries[i] for i in by_score([e[0] for e in entries], ties)]
    else:
        entries = sorted(entries, key=lambda e: (-e[0], e[1]))
    precision, recall = [], []
    tp = fp = 0.0
    for _, t in entries:
        if t > 0:
            tp += t
        else:
            fp += 1.0
        precision.append(tp / (tp + fp))
        recall.append(tp / num_gt)
    if not precision:
        return 0.0
    r = [0.0] + recall + [1.0]
    p = [0.0] + precision + [0.0]
    for i in range(len(p) - 2, -1, -1):
        p[i] = max(p[i], p[i + 1])
    return float(np.sum([(r[i] - r[i - 1]) * p[i] for i in range(1, len(r)) if r[i] != r[i - 1]]))


def mean_ap(images, classes, hierarchy, ties: str = 'official'):
    """-> (mAP, {class: AP}) over the classes with counted GT. ``images``: {ImageID: LImage}, or a list
    already in ImageID order."""
    if isinstance(images, dict):
        images = [images[k] for k in sorted(images)]
    all_entries, counted = {}, {}
    for img in images:
        out = evaluate_image(img, classes, hierarchy, ties=ties)
        if out is None:
            continue
        entries, cnt, _ = out
        for k, v in entries.items():
            all_entries.setdefault(k, []).extend(v)
        for k, v in cnt.items():
            counted[k] = counted.get(k, 0) + v
    aps = {k: average_precision(all_entries.get(k, []), n, ties) for k, n in counted.items() if n > 0}
    return (float(np.mean(list(aps.values()))) if aps else float('nan')), aps
