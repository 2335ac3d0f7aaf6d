"""A small synthetic Open Images challenge download, for tests and CPU demos.

It writes the files and folder layout of Google's download (as ``util.common.oid_files`` names them and the
README's "Download layout" shows them) so every step of the pipeline can run end to end without the real
500 GB: JPEG images in ``train/``, ``validation/``,
``test/``; the masks CSVs and mask PNGs (at a resolution other than the image's) in ``{split}-masks-{c}/``;
the validation box and image-label CSVs (with box-only and group-of boxes); ``sample_empty_submission.csv``;
and ``synthetic-classes.csv`` (MID, name, shape, colour of each class used), which the real download lacks.

Classes are real MIDs: leaves chosen so that their parents and both grandparents occur (Teddy bear brings
Toy, Bear and Carnivore; Tortoise brings Turtle and Reptile). Each class has its own shape AND colour,
meant to let a small CPU model learn them in a few hundred iterations; class frequency follows the real
train counts raised to ``--tail-power`` (long-tailed: with the defaults Man has ~140 train masks and the
rarest class ~16). Every image draws from its own seed ``(seed, split, index)``: the output is
byte-identical for a seed, and a bigger ``--train`` only adds images.

Two options make it more like the real data; off, the output is the original one, byte for byte.
``--federated`` annotates the train split as Open Images' is: it also gets its bbox and image-level labels
CSVs, some boxes have no mask, some drawn classes are not verified for their image and have no rows at all
(``synthetic-train-objects.csv`` lists every drawn train object and what became of it); validation keeps
its ground truth, so the metric measures what that costs. ``--difficulty medium|hard|LEVEL`` adds textured
and cluttered backgrounds, occlusion, small and stretched objects and look-alike classes, so that slim
models no longer saturate.

    python -m util.data.synthetic --out data/synthetic --seed 0 [--train 200 --val 50 --test 50]
        [--federated] [--difficulty easy|medium|hard|0.7]
"""
from __future__ import annotations

import argparse
import csv
import io
import os
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from ..common.atomic import AtomicWriter
from ..common.cli import add_progress_flag, run
from ..common.cli import progress as cli_progress
from ..common.errors import DataError
from ..common.hierarchy import load_default, read_mask_counts
from ..common.mask_codec import resize_nearest
from ..common.oid_files import (
    BBOX_COLUMNS,
    LABELS_COLUMNS,
    MASKS_COLUMNS,
    bbox_csv_name,
    labels_csv_name,
    mask_png_name,
    masks_csv_name,
    masks_subdir,
)

# Teddy bear first: any prefix of this list of 4 or more covers both grandparents (Carnivore, Reptile).
DEFAULT_CLASSES = (
    '/m/0kmg4',   # Teddy bear  -> Toy, Bear, Carnivore
    '/m/04yx4',   # Man         -> Person
    '/m/01yrx',   # Cat         -> Carnivore
    '/m/011k07',  # Tortoise    -> Turtle, Reptile
    '/m/04m9y',   # Lizard      -> Reptile
    '/m/01j51',   # Balloon     -> Toy
    '/m/06m11',   # Rose        -> Flower
    '/m/09ddx',   # Duck        -> Bird
    '/m/04dr76w',  # Bottle     (no parent)
    '/m/0342h',   # Guitar      (no parent)
)
SHAPES = ('circle', 'square', 'triangle', 'ring', 'cross', 'diamond', 'star', 'crescent', 'hexagon',
          'frame', 'bar', 'saltire')
COLOURS = ((220, 40, 40), (40, 170, 60), (40, 80, 220), (235, 200, 30), (200, 50, 200), (30, 200, 210),
           (245, 130, 20), (120, 60, 170), (245, 245, 245), (110, 70, 30), (150, 230, 40), (250, 150, 190))
SPLITS = ('train', 'validation', 'test')
ASPECTS = (4 / 3, 3 / 4, 16 / 9, 9 / 16, 1.0, 3 / 2, 2 / 3)


@dataclass
class SyntheticObject:
    """One annotated thing in an image: a shape, or a group-of cluster of small shapes."""
    cls: int                 # index into the generator's class list
    mask: np.ndarray         # HxW uint8 0/1 at image resolution
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 pixels, x2/y2 exclusive (tight around the mask)
    group_of: bool = False
    has_mask: bool = True    # False: a box-only object (validation, or a federated train group-of)
    annotated: str = 'mask'  # federated train: 'mask', 'box' (box-only) or 'none' (class not verified)


def shape_mask(shape: str, height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Binary mask of ``shape`` drawn to fill ``box`` (x1, y1, x2, y2) on an HxW canvas."""
    m = np.zeros((height, width), np.uint8)
    x1, y1, x2, y2 = box
    cx, cy, rx, ry = (x1 + x2 - 1) / 2, (y1 + y2 - 1) / 2, (x2 - x1) / 2, (y2 - y1) / 2

    def pts(unit):  # unit-square points in [-1, 1] -> pixel polygon
        return np.array([[cx + u * rx, cy + v * ry] for u, v in unit], np.float64).round().astype(np.int32)

    def poly(unit):
        cv2.fillPoly(m, [pts(unit)], 1)

    def ellipse(scale, value, dx=0.0):
        cv2.ellipse(m, (int(round(cx + dx * rx)), int(round(cy))),
                    (max(1, int(round(rx * scale))), max(1, int(round(ry * scale)))), 0, 0, 360, value, -1)

    if shape == 'circle':
        ellipse(1.0, 1)
    elif shape == 'square':
        poly([(-1, -1), (1, -1), (1, 1), (-1, 1)])
    elif shape == 'triangle':
        poly([(0, -1), (1, 1), (-1, 1)])
    elif shape == 'ring':
        ellipse(1.0, 1)
        ellipse(0.55, 0)
    elif shape == 'cross':
        poly([(-0.3, -1), (0.3, -1), (0.3, 1), (-0.3, 1)])
        poly([(-1, -0.3), (1, -0.3), (1, 0.3), (-1, 0.3)])
    elif shape == 'diamond':
        poly([(0, -1), (1, 0), (0, 1), (-1, 0)])
    elif shape == 'star':
        ang = np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        poly(list(zip(rad * np.cos(ang), -rad * np.sin(ang))))
    elif shape == 'crescent':
        ellipse(1.0, 1)
        ellipse(0.85, 0, dx=0.45)
    elif shape == 'hexagon':
        ang = np.arange(6) * np.pi / 3
        poly(list(zip(np.cos(ang), np.sin(ang))))
    elif shape == 'frame':
        poly([(-1, -1), (1, -1), (1, 1), (-1, 1)])
        cv2.fillPoly(m, [pts([(-0.55, -0.55), (0.55, -0.55), (0.55, 0.55), (-0.55, 0.55)])], 0)
    elif shape == 'bar':
        poly([(-1, -0.35), (1, -0.35), (1, 0.35), (-1, 0.35)])
    elif shape == 'saltire':
        poly([(-1, -0.75), (-0.75, -1), (1, 0.75), (0.75, 1)])
        poly([(1, -0.75), (0.75, -1), (-1, 0.75), (-0.75, 1)])
    else:
        raise ValueError(f'unknown shape {shape!r}')
    return m


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def class_probabilities(mids, counts: dict[str, int], power: float) -> np.ndarray:
    """Real train mask counts raised to ``power``: long-tailed, yet no class vanishes."""
    w = np.array([max(counts.get(m, 1), 1) for m in mids], np.float64) ** power
    return w / w.sum()


def image_size_for(rng, long_side: tuple[int, int]) -> tuple[int, int]:
    """(width, height) with a random long side in the range and a common photo aspect ratio."""
    side = int(rng.integers(long_side[0], long_side[1] + 1))
    aspect = ASPECTS[rng.integers(len(ASPECTS))]
    short = max(32, int(round(side / max(aspect, 1 / aspect))))
    return (side, short) if aspect >= 1 else (short, side)


def _place(rng, width, height, side_w, side_h, taken, tries=30):
    """A box of the given size overlapping none of ``taken`` (2 px apart), or None."""
    for _ in range(tries):
        x1 = int(rng.integers(0, max(1, width - side_w)))
        y1 = int(rng.integers(0, max(1, height - side_h)))
        b = (x1, y1, x1 + side_w, y1 + side_h)
        if all(b[0] >= t[2] + 2 or t[0] >= b[2] + 2 or b[1] >= t[3] + 2 or t[1] >= b[3] + 2 for t in taken):
            return b
    return None


def make_objects(rng, width, height, probs, shapes, split) -> list[SyntheticObject]:
    """1-4 non-overlapping objects; in validation, sometimes a group-of cluster or a box-only object."""
    objs, taken = [], []
    short = min(width, height)
    for _ in range(int(rng.integers(1, 5))):
        cls = int(rng.choice(len(probs), p=probs))
        side = int(rng.uniform(0.18, 0.42) * short)
        b = _place(rng, width, height, side, side, taken)
        if b is None:
            break
        taken.append(b)
        m = shape_mask(shapes[cls], height, width, b)
        if m.any():
            objs.append(SyntheticObject(cls, m, tight_box(m)))
    if split == 'validation':
        _validation_extras(rng, width, height, probs, shapes, objs, taken)
    return objs


def _group_of_cluster(rng, width, height, cls, shape, taken) -> SyntheticObject | None:
    """3 small same-class shapes in a row, in a free spot: one group-of object (``has_mask`` to be set)."""
    side = max(6, int(0.09 * min(width, height)))
    region = _place(rng, width, height, 3 * side + 4, side + 2, taken)
    if region is None:
        return None
    taken.append(region)
    m = np.zeros((height, width), np.uint8)
    for k in range(3):
        x = region[0] + k * (side + 2)
        m |= shape_mask(shape, height, width, (x, region[1], x + side, region[1] + side))
    return SyntheticObject(cls, m, tight_box(m), group_of=True) if m.any() else None


def _validation_extras(rng, width, height, probs, shapes, objs, taken) -> None:
    """Box-only and group-of ground truth, which the metric treats specially."""
    if objs and rng.random() < 0.25:   # the last object loses its mask: box-only ground truth
        objs[-1].has_mask = False
    if rng.random() < 0.3:             # a group-of cluster of 3 small same-class shapes
        cls = int(rng.choice(len(probs), p=probs))
        cluster = _group_of_cluster(rng, width, height, cls, shapes[cls], taken)
        if cluster is not None:
            cluster.has_mask = bool(rng.random() < 0.7)
            objs.append(cluster)


def render_image(rng, width, height, objs, colours) -> np.ndarray:
    """RGB image: a muted gradient with noise, each object in its class colour."""
    base = rng.uniform(70, 170, size=(2, 3))
    t = np.linspace(0, 1, width if rng.random() < 0.5 else height)
    ramp = base[0] + (base[1] - base[0]) * t[:, None]
    img = np.broadcast_to(ramp[None] if len(t) == width else ramp[:, None], (height, width, 3)).copy()
    img += rng.normal(0, 8, size=img.shape)
    for o in objs:
        c = np.asarray(colours[o.cls], np.float64) + rng.normal(0, 6, size=3)
        img[o.mask.astype(bool)] = c
    return np.clip(img, 0, 255).astype(np.uint8)


# ---- difficulty ----------------------------------------------------------------------------------
# One knob in [0, 1]; 0 is the original generator (its code path and random stream untouched). Every
# ingredient grows linearly with it; at 1: up to 10 objects that may hide up to half of each other, sides
# 6-60 % of the short side (log-uniform) with aspect up to 1.65, textured backgrounds with clutter (some
# in class colours), colour jitter and lighting, and look-alike class pairs (same colour / same shape).
DIFFICULTY_LEVELS = {'easy': 0.0, 'medium': 0.5, 'hard': 1.0}


def parse_difficulty(value) -> float:
    """``easy``/``medium``/``hard`` or a number in [0, 1] -> the level."""
    if isinstance(value, str) and value in DIFFICULTY_LEVELS:
        return DIFFICULTY_LEVELS[value]
    try:
        level = float(value)
    except (TypeError, ValueError):
        raise DataError(f'--difficulty: {value!r} is neither easy, medium, hard nor a number') from None
    if not 0.0 <= level <= 1.0:
        raise DataError(f'--difficulty: {value} is outside [0, 1]')
    return level


def look_alike_appearance(shapes, colours, level: float):
    """Class pairs (0,1), (2,3), ...: the first round(level * n/2) pairs become look-alikes.

    Even pairs share the colour (they differ only in shape), odd pairs share the shape and their colours
    move towards each other (they differ only in a shade). A pair that would duplicate another class's
    look stays as it was.
    """
    shapes, colours = list(shapes), list(colours)
    pairs = int(level * (len(shapes) // 2) + 0.5)
    for p in range(pairs):
        a, b = 2 * p, 2 * p + 1
        if p % 2 == 0:
            look = (shapes[b], colours[a])
        else:
            keep = 0.3 + 0.4 * (1.0 - level)   # the share of its own colour b keeps
            look = (shapes[a], tuple(round(ca + keep * (cb - ca)) for ca, cb in zip(colours[a], colours[b])))
        if look not in set(zip(shapes, colours)):
            shapes[b], colours[b] = look
    return shapes, colours


def _place_overlapping(rng, width, height, box_w, box_h, shape, visible, max_iof, tries=30):
    """A box and its full mask that hides at most ``max_iof`` of any box and half of any visible mask."""
    for _ in range(tries):
        x1 = int(rng.integers(0, max(1, width - box_w)))
        y1 = int(rng.integers(0, max(1, height - box_h)))
        b = (x1, y1, x1 + box_w, y1 + box_h)
        ok = True
        for o, full_area in visible:
            t = o.box
            iw = min(b[2], t[2]) - max(b[0], t[0])
            ih = min(b[3], t[3]) - max(b[1], t[1])
            if iw > 0 and ih > 0 and iw * ih > max_iof * min(box_w * box_h, (t[2] - t[0]) * (t[3] - t[1])):
                ok = False
                break
        if not ok:
            continue
        m = shape_mask(shape, height, width, b)
        if not m.any():
            continue
        if all(int((o.mask & (1 - m)).sum()) * 2 >= full_area for o, full_area in visible):
            return b, m
    return None


def make_hard_objects(rng, width, height, probs, shapes, split, level) -> list[SyntheticObject]:
    """Like ``make_objects`` at a difficulty level > 0: more, smaller, stretched, overlapping objects.

    Objects are drawn in list order; each mask is what stays visible (later objects hide earlier ones)
    and each box is tight around that visible part, as an annotator would draw it.
    """
    objs, visible = [], []   # visible: (object, area of its full mask)
    short = min(width, height)
    lo, hi = np.log(0.18 - 0.12 * level), np.log(0.42 + 0.18 * level)
    for _ in range(int(rng.integers(1, 5 + round(6 * level)))):
        cls = int(rng.choice(len(probs), p=probs))
        side = float(np.exp(rng.uniform(lo, hi))) * short
        aspect = float(np.exp(rng.uniform(-0.5, 0.5) * level))
        box_w = min(width - 1, max(6, int(side * aspect ** 0.5)))
        box_h = min(height - 1, max(6, int(side / aspect ** 0.5)))
        placed = _place_overlapping(rng, width, height, box_w, box_h, shapes[cls], visible, 0.5 * level)
        if placed is None:
            continue
        _, m = placed
        for o, _ in visible:
            o.mask &= 1 - m
            o.box = tight_box(o.mask)
        o = SyntheticObject(cls, m, tight_box(m))
        objs.append(o)
        visible.append((o, int(m.sum())))
    if split == 'validation':
        _validation_extras(rng, width, height, probs, shapes, objs, [o.box for o in objs])
    return objs


def _clutter(rng, img, count, colours) -> None:
    """Unannotated things on the background: blobs, lines and outlines, a third in class colours."""
    height, width = img.shape[:2]
    short = min(width, height)
    for _ in range(count):
        if rng.random() < 0.35:
            colour = np.asarray(colours[int(rng.integers(len(colours)))], np.float64) + rng.normal(0, 10, 3)
        else:
            colour = rng.uniform(30, 250, 3)
        colour = tuple(float(c) for c in colour)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.03, 0.2) * short
        kind = int(rng.integers(3))
        if kind == 0:     # an irregular blob
            k = int(rng.integers(5, 10))
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            rad = r * rng.uniform(0.35, 1.0, k)
            pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).round().astype(np.int32)
            cv2.fillPoly(img, [pts], colour)
        elif kind == 1:   # a line
            a = rng.uniform(0, np.pi)
            p1 = (int(cx - r * np.cos(a)), int(cy - r * np.sin(a)))
            p2 = (int(cx + r * np.cos(a)), int(cy + r * np.sin(a)))
            cv2.line(img, p1, p2, colour, int(rng.integers(1, 4)))
        else:             # an outline
            axes = (max(2, int(r)), max(2, int(r * rng.uniform(0.5, 1.0))))
            cv2.ellipse(img, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, colour,
                        int(rng.integers(1, 3)))


def render_hard_image(rng, width, height, objs, colours, level) -> np.ndarray:
    """``render_image`` at a difficulty level > 0: textured, cluttered, unevenly lit, shaded objects."""
    base = rng.uniform(60, 180, size=(2, 3))
    t = np.linspace(0, 1, width if rng.random() < 0.5 else height)
    ramp = base[0] + (base[1] - base[0]) * t[:, None]
    img = np.broadcast_to(ramp[None] if len(t) == width else ramp[:, None], (height, width, 3)).copy()
    cells = rng.normal(0, 1, size=(max(2, height // 20), max(2, width // 20), 4))
    cells = cv2.resize(cells, (width, height), interpolation=cv2.INTER_CUBIC)
    img += level * (35 * cells[..., :1] + 12 * cells[..., 1:])   # mostly brightness, a little hue
    if rng.random() < 0.5:   # stripes at a random angle and period
        yy, xx = np.mgrid[0:height, 0:width]
        a, period = rng.uniform(0, np.pi), rng.uniform(5, 30)
        img += (20 * level * np.sin(2 * np.pi * (xx * np.cos(a) + yy * np.sin(a)) / period))[..., None]
    _clutter(rng, img, int(rng.poisson(12 * level)), colours)
    for o in objs:
        sel = o.mask.astype(bool)
        c = np.asarray(colours[o.cls], np.float64) + rng.normal(0, 6 + 14 * level, size=3)
        ys, xs = np.nonzero(sel)
        a = rng.uniform(0, 2 * np.pi)
        proj = xs * np.cos(a) + ys * np.sin(a)
        shade = (proj - proj.mean()) / max(1.0, float(np.ptp(proj))) * 50 * level * rng.uniform(0, 1)
        img[sel] = c + shade[:, None]
    img += rng.normal(0, 8 + 6 * level, size=img.shape)
    img = img * rng.uniform(1 - 0.2 * level, 1 + 0.2 * level) + rng.uniform(-15, 15) * level
    return np.clip(img, 0, 255).astype(np.uint8)


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format='JPEG', quality=quality)
    return buf.getvalue()


def encode_png_mask(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(bool)).save(buf, format='PNG')   # 1-bit PNG
    return buf.getvalue()


def mask_resolution(rng, width, height) -> tuple[int, int]:
    """A mask size other than the image's (as in the real data): scaled by 0.5-0.9 or 1.1-1.6."""
    s = rng.uniform(0.5, 0.9) if rng.random() < 0.5 else rng.uniform(1.1, 1.6)
    mw, mh = max(8, int(round(width * s))), max(8, int(round(height * s)))
    if (mw, mh) == (width, height):
        mw += 1
    return mw, mh


def _clicks(rng, box, width, height) -> str:
    x1, y1, x2, y2 = box
    xs = rng.uniform(x1, x2, 3) / width
    ys = rng.uniform(y1, y2, 3) / height
    return ';'.join(f'{x:.5f} {y:.5f} {int(rng.random() < 0.7)}' for x, y in zip(xs, ys))


# ---- federated train annotation --------------------------------------------------------------------
# Open Images' train split is annotated federatedly: per image some classes are verified present or absent,
# the instances of present ones are boxed, and only some boxes have a mask. With ``federated`` the train
# split is too; its draws come from a stream of their own, so the images' own streams stay as they were.
UNVERIFIED_RATE = 0.3       # a drawn class is not verified for its image: its objects get no rows at all
BOX_ONLY_RATE = 0.3         # an instance of a verified class is boxed but gets no mask
TRAIN_GROUP_OF_RATE = 0.3   # a train image gets a box-only group-of cluster
FEDERATED_STREAM = 1        # the extra seed word of those draws
# Every drawn train object and what became of it (mask, box, none): the truth the real download lacks.
TRAIN_OBJECTS_CSV = 'synthetic-train-objects.csv'
TRAIN_OBJECTS_COLUMNS = (*BBOX_COLUMNS, 'Annotated')


def image_labels(rng, present, absent_pool, hierarchy) -> list[tuple[str, int]]:
    """Image-level labels: ``present`` verified present (sometimes a parent too), 1-2 verified absent."""
    labels = [(m, 1) for m in present]
    if present and rng.random() < 0.3:   # a verified parent label, as raters sometimes add
        ups = hierarchy.ancestors_in_order(present[int(rng.integers(len(present)))])
        if ups:
            labels.append((ups[int(rng.integers(len(ups)))], 1))
    for k in rng.permutation(len(absent_pool))[:int(rng.integers(1, 3))]:
        labels.append((absent_pool[k], 0))
    return labels


def federate(rng, img, objs, mids, probs, shapes, colours, hierarchy) -> list[tuple[str, int]]:
    """Annotate one train image federatedly: set each object's ``annotated``; return its image labels.

    It may add a box-only group-of cluster, painted into ``img`` in a free spot. At least one drawn class
    of every image stays verified; the verified-absent labels are classes not drawn in the image.
    """
    height, width = img.shape[:2]
    if rng.random() < TRAIN_GROUP_OF_RATE:
        cls = int(rng.choice(len(probs), p=probs))
        cluster = _group_of_cluster(rng, width, height, cls, shapes[cls], [o.box for o in objs])
        if cluster is not None:
            colour = np.asarray(colours[cls], np.float64) + rng.normal(0, 6, size=3)
            img[cluster.mask.astype(bool)] = np.clip(colour, 0, 255).astype(np.uint8)
            cluster.has_mask = False
            objs.append(cluster)
    present = sorted({mids[o.cls] for o in objs})
    unverified = {m for m in present if rng.random() < UNVERIFIED_RATE}
    if present and unverified == set(present):
        unverified.discard(present[int(rng.integers(len(present)))])
    for o in objs:
        if mids[o.cls] in unverified:
            o.annotated = 'none'
        elif not o.has_mask or rng.random() < BOX_ONLY_RATE:
            o.annotated = 'box'
    verified = [m for m in present if m not in unverified]
    return image_labels(rng, verified, [m for m in mids if m not in present], hierarchy)


@dataclass
class SplitRows:
    masks: list
    bbox: list
    labels: list
    sizes: list
    objects: list


def generate_split(out, split, count, seed, mids, probs, shapes, colours, long_side, hierarchy, used_ids,
                   progress=True, level=0.0, federated=False) -> SplitRows:
    """Write the images (and mask PNGs) of one split; return its CSV rows."""
    rows = SplitRows([], [], [], [], [])
    split_code = SPLITS.index(split)
    federated = federated and split == 'train'
    img_dir = os.path.join(out, split)
    os.makedirs(img_dir, exist_ok=True)
    for i in cli_progress(range(count), enabled=progress, desc=f'synthetic {split}'):
        rng = np.random.default_rng([seed, split_code, i])
        image_id = f'{int(rng.integers(0, 2 ** 64, dtype=np.uint64)):016x}'
        if image_id in used_ids:
            raise DataError(f'{out}: image id {image_id} drawn twice; choose another --seed')
        used_ids.add(image_id)
        width, height = image_size_for(rng, long_side)
        if level > 0:
            objs = make_hard_objects(rng, width, height, probs, shapes, split, level)
            img = render_hard_image(rng, width, height, objs, colours, level)
        else:
            objs = make_objects(rng, width, height, probs, shapes, split)
            img = render_image(rng, width, height, objs, colours)
        if federated:
            fed_rng = np.random.default_rng([seed, split_code, i, FEDERATED_STREAM])
            rows.labels.extend([image_id, m, c] for m, c in
                               federate(fed_rng, img, objs, mids, probs, shapes, colours, hierarchy))
        with open(os.path.join(img_dir, f'{image_id}.jpg'), 'wb') as f:
            f.write(encode_jpeg(img))
        rows.sizes.append((image_id, width, height))
        if split == 'test':
            continue
        mw, mh = mask_resolution(rng, width, height)
        mask_dir = os.path.join(out, masks_subdir(split, image_id))
        for o in objs:
            mid = mids[o.cls]
            x1, y1, x2, y2 = o.box
            nbox = tuple(f'{v:.6f}' for v in (x1 / width, x2 / width, y1 / height, y2 / height))
            if o.has_mask:   # drawn whether or not the row is kept: the image's stream stays the same
                box_id = f'{int(rng.integers(0, 2 ** 32)):08x}'
                name = mask_png_name(image_id, mid, box_id)
                row = [name, image_id, mid, box_id, *nbox, f'{rng.uniform(0.6, 0.95):.5f}',
                       _clicks(rng, o.box, width, height)]
                if o.annotated == 'mask':
                    os.makedirs(mask_dir, exist_ok=True)
                    with open(os.path.join(mask_dir, name), 'wb') as f:
                        f.write(encode_png_mask(resize_nearest(o.mask, mh, mw)))
                    rows.masks.append(row)
            if split == 'validation' or (federated and o.annotated != 'none'):
                rows.bbox.append([image_id, mid, *nbox, int(o.group_of)])
            if federated:
                rows.objects.append([image_id, mid, *nbox, int(o.group_of), o.annotated])
        if split == 'validation':
            present = sorted({mids[o.cls] for o in objs})
            labels = image_labels(rng, present, [m for m in mids if m not in present], hierarchy)
            rows.labels.extend([image_id, m, c] for m, c in labels)
    return rows


def _write_csv(path, header, rows):
    with AtomicWriter(path) as f:
        w = csv.writer(f, lineterminator='\n')
        w.writerow(header)
        w.writerows(rows)


def generate(out: str, seed: int = 0, train: int = 200, val: int = 50, test: int = 50,
             classes=DEFAULT_CLASSES, long_side=(160, 320), tail_power: float = 0.5,
             progress: bool = True, federated: bool = False, difficulty='easy') -> None:
    """Write a whole synthetic download into ``out``.

    ``federated``: the train split also gets its bbox and image-level labels CSVs, with box-only and
    unannotated objects (see ``federate``); validation stays as it is. ``difficulty``: ``easy`` (the
    original data), ``medium``, ``hard`` or a level in [0, 1] (see ``make_hard_objects``).
    """
    level = parse_difficulty(difficulty)
    hierarchy = load_default()
    leaves = set(hierarchy.leaves)
    for m in classes:
        if m not in leaves:
            raise DataError(f'--classes: {m} is not one of the 275 leaf MIDs')
    if len(set(classes)) != len(classes):
        raise DataError('--classes: a MID is listed twice')
    mids = list(classes)
    n = len(mids)
    shapes = [SHAPES[k % len(SHAPES)] for k in range(n)]
    rng = np.random.default_rng([seed, 99])
    colours = [COLOURS[k] if k < len(COLOURS) else tuple(int(v) for v in rng.integers(30, 250, 3))
               for k in range(n)]
    if level > 0:
        shapes, colours = look_alike_appearance(shapes, colours, level)
    probs = class_probabilities(mids, read_mask_counts(), tail_power)
    used: set[str] = set()
    args = dict(seed=seed, mids=mids, probs=probs, shapes=shapes, colours=colours, long_side=long_side,
                hierarchy=hierarchy, used_ids=used, progress=progress, level=level)
    os.makedirs(out, exist_ok=True)
    train_rows = generate_split(out, 'train', train, federated=federated, **args)
    val_rows = generate_split(out, 'validation', val, **args)
    test_rows = generate_split(out, 'test', test, **args)
    _write_csv(os.path.join(out, masks_csv_name('train')), MASKS_COLUMNS,
               sorted(train_rows.masks, key=lambda r: r[1]))
    _write_csv(os.path.join(out, masks_csv_name('validation')), MASKS_COLUMNS,
               sorted(val_rows.masks, key=lambda r: r[1]))
    _write_csv(os.path.join(out, bbox_csv_name('validation')), BBOX_COLUMNS,
               sorted(val_rows.bbox, key=lambda r: r[0]))
    _write_csv(os.path.join(out, labels_csv_name('validation')), LABELS_COLUMNS,
               sorted(val_rows.labels, key=lambda r: r[0]))
    if federated:
        _write_csv(os.path.join(out, bbox_csv_name('train')), BBOX_COLUMNS,
                   sorted(train_rows.bbox, key=lambda r: r[0]))
        _write_csv(os.path.join(out, labels_csv_name('train')), LABELS_COLUMNS,
                   sorted(train_rows.labels, key=lambda r: r[0]))
        _write_csv(os.path.join(out, TRAIN_OBJECTS_CSV), TRAIN_OBJECTS_COLUMNS,
                   sorted(train_rows.objects, key=lambda r: r[0]))
    _write_csv(os.path.join(out, 'sample_empty_submission.csv'),
               ['ImageID', 'ImageWidth', 'ImageHeight', 'PredictionString'],
               [[i, w, h, ''] for i, w, h in sorted(test_rows.sizes)])
    _write_csv(os.path.join(out, 'synthetic-classes.csv'), ['LabelName', 'Name', 'Shape', 'Colour'],
               [[m, hierarchy.name(m), s, '#%02x%02x%02x' % c] for m, s, c in zip(mids, shapes, colours)])


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='python -m util.data.synthetic', description=__doc__.split('\n\n')[0])
    p.add_argument('--out', required=True, help='output folder (the layout of the real download)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--train', type=int, default=200, help='train images (default 200)')
    p.add_argument('--val', type=int, default=50, help='validation images (default 50)')
    p.add_argument('--test', type=int, default=50, help='test images (default 50)')
    p.add_argument('--classes', default=None,
                   help='comma-separated leaf MIDs (default: 10 leaves covering Toy, Bear, Carnivore, '
                        'Turtle, Reptile, Person, Flower, Bird)')
    p.add_argument('--num-classes', type=int, default=None,
                   help='use the first K default classes (Teddy bear first; K>=4 covers both grandparents)')
    p.add_argument('--long-side', type=int, nargs=2, default=(160, 320), metavar=('MIN', 'MAX'),
                   help='image long side range in pixels (default 160 320: small, for CPU training)')
    p.add_argument('--real-size', action='store_true', help='long side 1024, as the real images (benchmarks)')
    p.add_argument('--tail-power', type=float, default=0.5,
                   help='class frequency = real train count ** power (default 0.5; 1 = the real imbalance)')
    p.add_argument('--federated', action='store_true',
                   help='train split annotated federatedly: also its bbox and image-level labels CSVs; some '
                        'boxes without a mask, some drawn classes not verified (no rows at all)')
    p.add_argument('--difficulty', default='easy',
                   help='easy (default: the original data), medium, hard, or a level in [0, 1]: clutter, '
                        'texture, occlusion, small and stretched objects, look-alike classes')
    add_progress_flag(p)
    return p.parse_args(argv)


def main(argv=None) -> None:
    a = parse_args(argv)
    classes = tuple(a.classes.split(',')) if a.classes else DEFAULT_CLASSES
    if a.num_classes is not None:
        if not 1 <= a.num_classes <= len(classes):
            raise DataError(f'--num-classes must be between 1 and {len(classes)}')
        classes = classes[:a.num_classes]
    long_side = (1024, 1024) if a.real_size else tuple(a.long_side)
    if not 32 <= long_side[0] <= long_side[1]:
        raise DataError('--long-side: need 32 <= MIN <= MAX')
    generate(a.out, a.seed, a.train, a.val, a.test, classes, long_side, a.tail_power,
             progress=a.progress, federated=a.federated, difficulty=parse_difficulty(a.difficulty))
    print(f'wrote {a.train} train, {a.val} validation, {a.test} test images to {a.out}')


if __name__ == '__main__':
    raise SystemExit(run(main))
