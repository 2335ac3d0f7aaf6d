"""Random small images for the metric tests: every situation the rules distinguish, in a few pixels.

Labels come from a pool with multi-level and multi-parent classes (Teddy bear -> Toy, Bear, Carnivore;
Tortoise -> Turtle -> Reptile; Man -> Person) plus Guitar, which appears only as a stray detection or an
image-level label. GT may be masked, box-only, group-of, or carry an empty mask; detections may copy or
perturb a GT mask, be empty, duplicate another (exact ties), score 0 or below the -10 floor.
"""
from __future__ import annotations

import numpy as np
from _eval_literal import LImage, LObject
from pycocotools import mask as mask_utils

TEDDY, TOY, BEAR, CARNIVORE = '/m/0kmg4', '/m/0138tl', '/m/01dws', '/m/01lrl'
TORTOISE, TURTLE, REPTILE = '/m/011k07', '/m/09dzg', '/m/06bt6'
MAN, PERSON, GUITAR = '/m/04yx4', '/m/01g317', '/m/0342h'
GT_POOL = [TEDDY, TEDDY, TORTOISE, MAN, MAN, TURTLE, BEAR, TOY]
DET_POOL = [TEDDY, TOY, BEAR, CARNIVORE, TORTOISE, TURTLE, REPTILE, MAN, PERSON, GUITAR]
SCORES = [0.0, 0.25, 0.5, 0.5, 0.75, 1.0, -20.0]


def random_blob(rng, h, w, density=0.8):
    m = np.zeros((h, w), np.uint8)
    y0, x0 = rng.integers(0, h), rng.integers(0, w)
    y1, x1 = rng.integers(y0, h) + 1, rng.integers(x0, w) + 1
    m[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < density
    return m


def box_of(m, h, w):
    """Normalised (xmin, xmax, ymin, ymax) of a non-empty mask."""
    ys, xs = np.nonzero(m)
    return (xs.min() / w, (xs.max() + 1) / w, ys.min() / h, (ys.max() + 1) / h)


def perturb(rng, m):
    out = m.copy()
    flips = rng.random(m.shape) < rng.choice([0.0, 0.05, 0.2])
    out[flips] ^= 1
    if rng.random() < 0.3:
        out = np.roll(out, rng.integers(-2, 3), axis=int(rng.integers(0, 2)))
    return out


def random_image(rng) -> LImage:
    h, w = int(rng.integers(6, 22)), int(rng.integers(6, 22))
    img = LImage(h, w)
    if rng.random() < 0.08:                      # no GT at all: ignored whatever it detects
        n_obj = 0
    else:
        n_obj = int(rng.integers(0, 5))
    shapes = []                                  # what each object looks like, masked or not
    for _ in range(n_obj):
        label = str(rng.choice(GT_POOL))
        kind = rng.random()
        m = random_blob(rng, h, w)
        if not m.any():
            m[0, 0] = 1
        shapes.append(m)
        if kind < 0.25:                          # box-only
            img.objects.append(LObject(label, box_of(m, h, w), bool(rng.random() < 0.3), None))
            continue
        if kind < 0.3:
            m = np.zeros_like(m)                 # a mask row whose mask is empty: box-only for the rules
        img.objects.append(LObject(label, box_of(shapes[-1], h, w), bool(rng.random() < 0.25), m))
    if n_obj or rng.random() < 0.5:
        for _ in range(int(rng.integers(0, 3))):
            img.image_labels.append((str(rng.choice(DET_POOL)), bool(rng.random() < 0.6)))
    dets = []
    for _ in range(int(rng.integers(0, 9))):
        r = rng.random()
        score = float(rng.choice(SCORES)) if rng.random() < 0.6 else round(float(rng.random()), 3)
        if r < 0.5 and img.objects:
            k = int(rng.integers(len(img.objects)))
            o, base = img.objects[k], shapes[k]
            label = o.label if rng.random() < 0.7 else str(rng.choice(DET_POOL))
            dets.append((label, score, perturb(rng, base)))
        elif r < 0.6 and dets:
            dets.append(dets[int(rng.integers(len(dets)))])       # an exact duplicate
        elif r < 0.65:
            dets.append((str(rng.choice(DET_POOL)), score, np.zeros((h, w), np.uint8)))
        else:
            dets.append((str(rng.choice(DET_POOL)), score, random_blob(rng, h, w)))
    img.detections = dets
    return img


def rle(m) -> dict:
    return mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))


def to_fast(img: LImage, classes):
    """LImage -> (GroundTruth, Detections) of util.metric.rules."""
    from util.metric.rules import Detections, GroundTruth
    boxes = np.array([(o.box[2], o.box[0], o.box[3], o.box[1]) for o in img.objects], np.float64).reshape(-1, 4)
    gt = GroundTruth([o.label for o in img.objects], boxes, np.array([o.group_of for o in img.objects], bool),
                     [None if o.mask is None else rle(o.mask) for o in img.objects], list(img.image_labels))
    dets = Detections(np.array([classes.index[d[0]] for d in img.detections], np.int64),
                      np.array([d[1] for d in img.detections], np.float64), [rle(d[2]) for d in img.detections])
    return gt, dets
