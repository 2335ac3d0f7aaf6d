"""Slow, obvious versions of the post-processing steps, and small random inputs, for the tests.

Everything here works on dense masks with plain loops and reads the hierarchy JSON directly, so the
tests compare util/'s compressed-domain code with something that is easy to believe.
"""
from __future__ import annotations

import base64
import csv
import json
import os
import subprocess
import sys
import warnings
import zlib

import numpy as np
from conftest import REPO
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

PY = sys.executable
HIERARCHY_JSON = os.path.join(REPO, 'data', 'challenge-2019-label300-segmentable-hierarchy.json')
HEADER = ['ImageID', 'ImageWidth', 'ImageHeight', 'PredictionString']

TEDDY, TOY, BEAR, CARNIVORE = '/m/0kmg4', '/m/0138tl', '/m/01dws', '/m/01lrl'
TURTLE, REPTILE, SEA_TURTLE, BROWN_BEAR = '/m/09dzg', '/m/06bt6', '/m/0120dh', '/m/01dxs'
PERSON, MAN, KITE = '/m/01g317', '/m/04yx4', '/m/02zt3'
# Leaves and parents used by the random tests: multi-parent, grandparent and plain cases.
SOME_LEAVES = [TEDDY, SEA_TURTLE, BROWN_BEAR, MAN, KITE]
SOME_PARENTS = [BEAR, TURTLE, TOY, PERSON]
TIE_SCORES = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]


# ---- hierarchy, read the plain way ---------------------------------------------------------------
def raw_hierarchy() -> tuple[list[str], dict[str, set[str]]]:
    """(labels in pre-order of first occurrence, label -> every label on any path above it)."""
    with open(HIERARCHY_JSON) as f:
        root = json.load(f)
    order, above = [], {}

    def walk(node, path):
        mid = node['LabelName']
        if mid not in above:
            order.append(mid)
            above[mid] = set()
        above[mid].update(path)
        for child in node.get('Subcategory', []):
            walk(child, path + [mid])

    for child in root['Subcategory']:
        walk(child, [])
    return order, above


# ---- masks ---------------------------------------------------------------------------------------
def encode(mask: np.ndarray) -> str:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return base64.b64encode(zlib.compress(rle['counts'], 9)).decode()


def decode(enc: str, h: int, w: int) -> np.ndarray:
    with warnings.catch_warnings():    # pycocotools' numpy-2 copy-keyword notice, once per call
        warnings.simplefilter('ignore', DeprecationWarning)
        return mask_utils.decode({'size': [h, w], 'counts': zlib.decompress(base64.b64decode(enc))})


def rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {'size': [int(v) for v in r['size']], 'counts': r['counts'].decode()}


def dense_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = int(np.logical_and(a, b).sum())
    union = int(np.logical_or(a, b).sum())
    return inter / union if union else 0.0


@st.composite
def masks(draw, h: int, w: int, previous: list):
    """A mask of one of several kinds: rectangle, empty, full, random pixels, copy of an earlier one."""
    kinds = ['rect', 'rect', 'rect', 'empty', 'full', 'noise'] + (['dup'] if previous else [])
    kind = draw(st.sampled_from(kinds))
    m = np.zeros((h, w), np.uint8)
    if kind == 'rect':
        y0, y1 = sorted(draw(st.tuples(st.integers(0, h), st.integers(0, h))))
        x0, x1 = sorted(draw(st.tuples(st.integers(0, w), st.integers(0, w))))
        m[y0:y1, x0:x1] = 1
    elif kind == 'full':
        m[:] = 1
    elif kind == 'noise':
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        m = (rng.random((h, w)) < 0.5).astype(np.uint8)
    elif kind == 'dup':
        m = draw(st.sampled_from(previous)).copy()
    return m


@st.composite
def image_detections(draw, labels: list[str], max_dets: int = 8, h=None, w=None):
    """(h, w, [(label, score, dense mask), ...]) with tied scores, empty and duplicate masks."""
    h = h or draw(st.integers(1, 8))
    w = w or draw(st.integers(1, 8))
    n = draw(st.integers(0, max_dets))
    out, previous = [], []
    for _ in range(n):
        m = draw(masks(h, w, previous))
        previous.append(m)
        score = draw(st.one_of(st.sampled_from(TIE_SCORES), st.integers(0, 1000).map(lambda k: k / 1000)))
        out.append((draw(st.sampled_from(labels)), score, m))
    return h, w, out


# ---- files ---------------------------------------------------------------------------------------
def write_csv(path: str, images) -> None:
    """images: [(image_id, w, h, [(label, score, dense mask or EncodedMask), ...]), ...]"""
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f, lineterminator='\n')
        writer.writerow(HEADER)
        for image_id, w, h, dets in images:
            writer.writerow([image_id, w, h, prediction_string(dets)])


def prediction_string(dets) -> str:
    return ' '.join(f'{label} {score:.6g} {m if isinstance(m, str) else encode(m)}'
                    for label, score, m in dets)


def read_csv(path: str) -> list[list[str]]:
    with open(path, newline='') as f:
        rows = list(csv.reader(f))
    assert rows[0] == HEADER
    return rows[1:]


def parse_dets(text: str) -> list[tuple[str, float, str]]:
    p = text.split()
    return [(p[i], float(p[i + 1]), p[i + 2]) for i in range(0, len(p), 3)]


def run_cli(*args, cwd=REPO, env=None):
    """Run ``python -m ...`` or a script; returns the CompletedProcess (text)."""
    e = dict(os.environ, PYTHONPATH=REPO)
    e.update(env or {})
    return subprocess.run([PY, *args], cwd=cwd, capture_output=True, text=True, env=e)


# ---- the steps, slowly ---------------------------------------------------------------------------
def best_first(scores, keep):
    """Indices in ``keep`` by descending score, the earlier one first on ties (selection sort)."""
    rest, out = list(keep), []
    while rest:
        best = rest[0]
        for i in rest:
            if scores[i] > scores[best]:
                best = i
        out.append(best)
        rest.remove(best)
    return out


def slow_convert(classes, labels, scores, dense, score_thr=0.0, top_k=None):
    """Results of one image -> submission triples (label, formatted score, EncodedMask)."""
    order = best_first(scores, [i for i in range(len(scores)) if scores[i] >= score_thr])
    if top_k is not None:
        order = order[:top_k]
    return [(classes[labels[i]], f'{scores[i]:.6g}', encode(dense[i])) for i in order]


def slow_expand(dets, parents_only=False, score_thr=None, only=None):
    order, above = raw_hierarchy()
    out = []
    for label, score, m in dets:
        if score_thr is not None and score < score_thr:
            continue
        targets = [x for x in order if x in above[label]]
        if not parents_only:
            targets = [label] + targets
        out.extend((t, score, m) for t in targets if only is None or t in only)
    return out


def slow_nms(dets, h, w, thr=0.5, vote=False):
    """Greedy mask NMS per label on dense masks; survivors in input order, voted masks replaced."""
    dense = [m if isinstance(m, np.ndarray) else decode(m, h, w) for _, _, m in dets]
    scores = [d[1] for d in dets]
    dropped, voted = set(), {}
    for label in dict.fromkeys(d[0] for d in dets):
        order = best_first(scores, [i for i in range(len(dets)) if dets[i][0] == label])
        for pos, a in enumerate(order):
            if a in dropped:
                continue
            hits = []
            for b in order[pos + 1:]:
                if b not in dropped and dense_iou(dense[a], dense[b]) >= thr:
                    dropped.add(b)
                    hits.append(b)
            if vote and len(hits) >= 2 and sum(scores[b] for b in hits) > scores[a]:
                weights = [scores[a]] + [scores[b] for b in hits]
                acc = np.zeros((h, w), np.float64)
                for wt, j in zip(weights, [a] + hits):
                    acc += wt * dense[j]
                voted[a] = (acc / sum(weights) > 0.5).astype(np.uint8)
    return [(d[0], d[1], voted.get(i, dense[i])) for i, d in enumerate(dets) if i not in dropped]


def slow_cap(dets, max_dets):
    if max_dets is None:
        return list(dets)
    keep = set(best_first([d[1] for d in dets], range(len(dets)))[:max_dets])
    return [d for i, d in enumerate(dets) if i in keep]


def same_dets(got_text: str, want, h: int, w: int) -> bool:
    """A PredictionString equals (label, score, dense mask or EncodedMask) triples: labels, scores to
    6 significant digits and masks pixel for pixel."""
    got = parse_dets(got_text)
    if len(got) != len(want):
        return False
    for (gl, gs, ge), (wl, ws, wm) in zip(got, want):
        wm = wm if isinstance(wm, np.ndarray) else decode(wm, h, w)
        if gl != wl or f'{gs:.6g}' != f'{float(ws):.6g}' or not np.array_equal(decode(ge, h, w), wm):
            return False
    return True
