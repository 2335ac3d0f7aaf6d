"""The synthetic download: deterministic, and in the official file formats and folder layout."""
import csv
import filecmp
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from util.common.hierarchy import load_default
from util.common.oid_files import BBOX_COLUMNS, LABELS_COLUMNS, MASKS_COLUMNS
from util.data.synthetic import DEFAULT_CLASSES, SHAPES, generate, shape_mask

HEX16 = re.compile(r'^[0-9a-f]{16}$')


def read_csv(path):
    with open(path, newline='') as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


@pytest.fixture(scope='module')
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp('synth')
    generate(str(out), seed=3, train=14, val=10, test=4, progress=False)
    return out


def test_same_seed_same_bytes(tmp_path, synth):
    """A second run through the CLI (a fresh process) writes byte-identical files."""
    subprocess.run([sys.executable, '-m', 'util.data.synthetic', '--out', str(tmp_path), '--seed', '3',
                    '--train', '14', '--val', '10', '--test', '4', '--no-progress'],
                   cwd=REPO, check=True, capture_output=True)
    for dirpath, _, files in os.walk(synth):
        rel = os.path.relpath(dirpath, synth)
        match, mismatch, errors = filecmp.cmpfiles(dirpath, tmp_path / rel, files, shallow=False)
        assert not mismatch and not errors, (rel, mismatch, errors)
    other = tmp_path / 'other'
    generate(str(other), seed=4, train=2, val=0, test=0, progress=False)
    assert sorted(os.listdir(other / 'train')) != sorted(os.listdir(synth / 'train'))[:2]


def test_masks_csv_and_pngs_follow_the_official_layout(synth):
    for split in ('train', 'validation'):
        header, rows = read_csv(synth / f'challenge-2019-{split}-segmentation-masks.csv')
        assert header == list(MASKS_COLUMNS)
        assert rows
        for name, image_id, mid, box_id, *box, iou, clicks in rows:
            assert HEX16.match(image_id)
            assert name == f'{image_id}_{mid.replace("/", "")}_{box_id}.png'
            png = synth / f'{split}-masks-{image_id[0]}' / name
            img = synth / split / f'{image_id}.jpg'
            with Image.open(png) as m, Image.open(img) as im:
                assert m.size != im.size          # masks are NOT at the image's resolution
                assert np.asarray(m).any()
            x1, x2, y1, y2 = map(float, box)
            assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
            assert 0 < float(iou) < 1 and clicks.count(';') == 2


def test_validation_boxes_labels_and_sample_submission(synth):
    header, bbox = read_csv(synth / 'challenge-2019-validation-segmentation-bbox.csv')
    assert header == list(BBOX_COLUMNS)
    _, masks = read_csv(synth / 'challenge-2019-validation-segmentation-masks.csv')
    with_mask = {(r[1], r[2], *r[4:8]) for r in masks}
    keys = [(r[0], r[1], *r[2:6]) for r in bbox]
    assert with_mask <= set(keys)                         # every mask has its box row
    assert any(k not in with_mask for k in keys)          # and some boxes are box-only
    assert {r[6] for r in bbox} == {'0', '1'}             # group-of boxes occur
    header, labels = read_csv(synth / 'challenge-2019-validation-segmentation-labels.csv')
    assert header == list(LABELS_COLUMNS)
    assert {r[2] for r in labels} == {'0', '1'}
    header, sub = read_csv(synth / 'sample_empty_submission.csv')
    assert header == ['ImageID', 'ImageWidth', 'ImageHeight', 'PredictionString']
    assert len(sub) == 4 and all(r[3] == '' for r in sub)
    for image_id, w, h, _ in sub:
        with Image.open(synth / 'test' / f'{image_id}.jpg') as im:
            assert im.size == (int(w), int(h)) and im.format == 'JPEG'


def test_classes_cover_parents_and_grandparents(synth):
    h = load_default()
    _, rows = read_csv(synth / 'challenge-2019-train-segmentation-masks.csv')
    assert '/m/0kmg4' in DEFAULT_CLASSES and all(m in h.leaves for m in DEFAULT_CLASSES)
    ancestors = set().union(*(h.ancestors(m) for m in DEFAULT_CLASSES))
    assert set(h.grandparents) <= ancestors              # Carnivore and Reptile are reached
    counts = {m: sum(r[2] == m for r in rows) for m in DEFAULT_CLASSES}
    assert counts['/m/04yx4'] >= counts['/m/0kmg4']      # Man (common) over Teddy bear (rare)


def test_shapes_are_distinct():
    masks = [shape_mask(s, 64, 64, (8, 8, 56, 56)) for s in SHAPES]
    for i in range(len(masks)):
        assert masks[i].sum() > 200
        for j in range(i):
            assert (masks[i] != masks[j]).sum() > 60, (SHAPES[i], SHAPES[j])


def test_bad_class_is_a_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, '-m', 'util.data.synthetic', '--out', str(tmp_path / 'x'),
                        '--classes', '/m/0138tl', '--no-progress'], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == ['error: --classes: /m/0138tl is not one of the 275 leaf MIDs']
