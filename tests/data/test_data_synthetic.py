"""The synthetic download: deterministic, and in the official file formats and folder layout."""
import csv
import filecmp
import hashlib
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, run_cli
from PIL import Image

from util.common.hierarchy import load_default
from util.common.mask_codec import rle_to_encoded
from util.common.oid_files import (
    BBOX_COLUMNS,
    LABELS_COLUMNS,
    MASKS_COLUMNS,
    bbox_csv_name,
    iter_rows,
    labels_csv_name,
    masks_csv_name,
)
from util.common.submission import SubmissionWriter
from util.data.annotations import load_annotations
from util.data.synthetic import (
    DEFAULT_CLASSES,
    SHAPES,
    TRAIN_OBJECTS_COLUMNS,
    TRAIN_OBJECTS_CSV,
    generate,
    shape_mask,
)

HEX16 = re.compile(r'^[0-9a-f]{16}$')
SHIPPED = os.path.join(REPO, 'data')   # the hierarchy and class list shipped with the repo


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


# ---- options: off is the original data; federated train annotation; difficulty -------------------------

def tree_digest(root):
    """{relative path: sha256} of every file under ``root``."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def strict_rows(path, columns):
    return [values for _, values in iter_rows(str(path), columns)]


def test_neutral_options_write_the_default_bytes(tmp_path, synth):
    """federated=False and difficulty easy / 0 are the original generator: same files, same bytes."""
    generate(str(tmp_path / 'lib'), seed=3, train=14, val=10, test=4, progress=False,
             federated=False, difficulty=0.0)
    run_cli(['-m', 'util.data.synthetic', '--out', str(tmp_path / 'cli'), '--seed', '3', '--train', '14',
             '--val', '10', '--test', '4', '--difficulty', 'easy', '--no-progress'])
    default = tree_digest(synth)
    assert tree_digest(tmp_path / 'lib') == default
    assert tree_digest(tmp_path / 'cli') == default


@pytest.fixture(scope='module')
def federated(tmp_path_factory):
    out = tmp_path_factory.mktemp('federated')
    generate(str(out), seed=3, train=40, val=10, test=4, progress=False, federated=True)
    return out


@pytest.fixture(scope='module')
def default40(tmp_path_factory):
    out = tmp_path_factory.mktemp('default40')
    generate(str(out), seed=3, train=40, val=10, test=4, progress=False)
    return out


def test_federated_train_files_parse_strictly_and_join(federated):
    masks = strict_rows(federated / masks_csv_name('train'), MASKS_COLUMNS)
    bbox = strict_rows(federated / bbox_csv_name('train'), BBOX_COLUMNS)
    labels = strict_rows(federated / labels_csv_name('train'), LABELS_COLUMNS)
    assert masks and bbox and labels
    box_keys = [tuple(r[:6]) for r in bbox]
    masked = {(r[1], r[2], *r[4:8]) for r in masks}
    assert masked <= set(box_keys)                           # every mask has its box row
    box_only = [r for r in bbox if tuple(r[:6]) not in masked]
    assert any(r[6] == '0' for r in box_only)                # box-only instances
    assert any(r[6] == '1' for r in box_only)                # and box-only group-of boxes
    for image_id, mid, *_ in box_only:                       # their masks are not written either
        folder = federated / f'train-masks-{image_id[0]}'
        names = os.listdir(folder) if folder.exists() else []
        assert sum(n.startswith(f'{image_id}_{mid.replace("/", "")}_') for n in names) == \
            sum(r[1] == image_id and r[2] == mid for r in masks)
    positive = {(r[0], r[1]) for r in labels if r[2] == '1'}
    assert {(r[0], r[1]) for r in bbox} <= positive          # every boxed class is verified present
    assert {r[2] for r in labels} == {'0', '1'}


def test_unverified_drawn_classes_have_no_rows_at_all(federated):
    objects = strict_rows(federated / TRAIN_OBJECTS_CSV, TRAIN_OBJECTS_COLUMNS)
    status = {}
    for image_id, mid, *_, annotated in objects:
        status.setdefault((image_id, mid), set()).add(annotated)
    unverified = {k for k, s in status.items() if s == {'none'}}
    assert unverified
    assert all(s == {'none'} or 'none' not in s for s in status.values())  # a class is verified or not
    rows = [(r[1], r[2]) for r in strict_rows(federated / masks_csv_name('train'), MASKS_COLUMNS)]
    rows += [(r[0], r[1]) for r in strict_rows(federated / bbox_csv_name('train'), BBOX_COLUMNS)]
    rows += [(r[0], r[1]) for r in strict_rows(federated / labels_csv_name('train'), LABELS_COLUMNS)]
    assert not unverified & set(rows)
    # they are drawn all the same: their class colour fills part of their box
    _, classes = read_csv(federated / 'synthetic-classes.csv')
    colour = {m: np.array([int(c[i:i + 2], 16) for i in (1, 3, 5)]) for m, _, _, c in classes}
    for image_id, mid, x1, x2, y1, y2, _, annotated in objects:
        if annotated == 'none':
            img = np.asarray(Image.open(federated / 'train' / f'{image_id}.jpg').convert('RGB'), np.float64)
            h, w = img.shape[:2]
            crop = img[int(float(y1) * h):int(float(y2) * h), int(float(x1) * w):int(float(x2) * w)]
            near = np.abs(crop - colour[mid]).max(axis=-1) < 40
            assert near.mean() > 0.2, (image_id, mid)
    # verified-absent labels are classes not drawn in the image
    drawn = {(r[0], r[1]) for r in objects}
    absent = {(r[0], r[1]) for r in strict_rows(federated / labels_csv_name('train'), LABELS_COLUMNS)
              if r[2] == '0'}
    assert absent and not absent & drawn


def test_federated_keeps_validation_and_only_removes_train_masks(federated, default40):
    fed, plain = tree_digest(federated), tree_digest(default40)
    for rel, digest in plain.items():
        if not rel.startswith('train') and rel != masks_csv_name('train'):
            assert fed[rel] == digest, rel                   # validation, test, their CSVs: unchanged
    kept = strict_rows(federated / masks_csv_name('train'), MASKS_COLUMNS)
    original = strict_rows(default40 / masks_csv_name('train'), MASKS_COLUMNS)
    assert set(map(tuple, kept)) < set(map(tuple, original))  # the same masks, some withheld
    assert not (default40 / bbox_csv_name('train')).exists()
    assert not (default40 / TRAIN_OBJECTS_CSV).exists()


def difficulty_stats(root):
    """Cheap proxies of difficulty over train + validation: objects per image, box size, overlap."""
    per_image = {}
    for split in ('train', 'validation'):
        for r in strict_rows(root / masks_csv_name(split), MASKS_COLUMNS):
            per_image.setdefault(r[1], []).append([float(v) for v in r[4:8]])
    areas, overlapping = [], 0
    for boxes in per_image.values():
        b = np.array(boxes)   # xmin, xmax, ymin, ymax (normalised)
        areas.extend((b[:, 1] - b[:, 0]) * (b[:, 3] - b[:, 2]))
        iw = np.minimum(b[:, None, 1], b[None, :, 1]) - np.maximum(b[:, None, 0], b[None, :, 0])
        ih = np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 2], b[None, :, 2])
        hit = (iw > 0) & (ih > 0)
        overlapping += int(hit.sum() - len(b)) // 2
    _, classes = read_csv(root / 'synthetic-classes.csv')
    shapes = [r[2] for r in classes]
    colours = [r[3] for r in classes]
    look_alike = sum(shapes.count(s) > 1 or colours.count(c) > 1 for s, c in zip(shapes, colours))
    return {'objects': float(np.mean([len(v) for v in per_image.values()])),
            'area': float(np.median(areas)), 'small': float(np.mean(np.array(areas) < 0.01)),
            'overlapping': overlapping, 'look_alike': look_alike}


@pytest.fixture(scope='module')
def by_level(tmp_path_factory):
    out = {}
    for level in ('easy', 'medium', 'hard'):
        root = tmp_path_factory.mktemp(f'level-{level}')
        generate(str(root), seed=5, train=30, val=20, test=2, progress=False, difficulty=level)
        out[level] = root
    return out


def test_difficulty_levels_are_measurably_harder(by_level):
    easy, medium, hard = (difficulty_stats(by_level[k]) for k in ('easy', 'medium', 'hard'))
    assert easy['objects'] < medium['objects'] < hard['objects']
    assert easy['area'] > medium['area'] > hard['area']
    assert easy['small'] < medium['small'] <= hard['small']
    assert easy['overlapping'] == 0 < medium['overlapping'] < hard['overlapping']
    assert easy['look_alike'] == 0 < medium['look_alike'] < hard['look_alike']


def test_difficulty_is_deterministic_and_seeded(tmp_path, by_level):
    generate(str(tmp_path / 'again'), seed=5, train=30, val=20, test=2, progress=False, difficulty=1.0)
    assert tree_digest(tmp_path / 'again') == tree_digest(by_level['hard'])
    generate(str(tmp_path / 'other'), seed=6, train=3, val=0, test=0, progress=False, difficulty=1.0)
    other = sorted(os.listdir(tmp_path / 'other' / 'train'))
    assert other != sorted(os.listdir(by_level['hard'] / 'train'))[:3]


def test_hard_federated_data_is_accepted_and_its_ground_truth_scores_one(tmp_path):
    """The strict annotation builder takes it; the ground truth as a submission scores mAP 1 with the metric.

    That holds only if every mask PNG, box and label agrees with the image (occluded masks included)."""
    root = tmp_path / 'hard'
    generate(str(root), seed=1, train=12, val=12, test=2, progress=False, federated=True, difficulty='hard')
    for split in ('train', 'validation'):
        run_cli(['-m', 'util.data.build', '--masks-csv', str(root / masks_csv_name(split)),
                 '--img-root', str(root), '--subset', 'leaf', '--strict', '--box-source', 'mask',
                 '--no-progress', '--out', str(root / f'ann-{split}.pkl')])
    ann = load_annotations(str(root / 'ann-validation.pkl'))
    mids = ann['metainfo']['mids']
    sub = tmp_path / 'gt.csv'
    with SubmissionWriter(str(sub)) as w:
        for item in ann['data_list']:
            w.write(item['img_id'], item['width'], item['height'],
                    [(mids[i['bbox_label']], 0.9, rle_to_encoded(i['mask'])) for i in item['instances']])
    run_cli(['-m', 'util.post.expand', str(sub), '-o', str(tmp_path / 'gt-expanded.csv')])
    proc = run_cli(['-m', 'util.metric.evaluate', '--submission', str(tmp_path / 'gt-expanded.csv'),
                    '--masks-csv', str(root / masks_csv_name('validation')), '--masks-dir', str(root),
                    '--bbox-csv', str(root / bbox_csv_name('validation')),
                    '--labels-csv', str(root / labels_csv_name('validation')),
                    '--hierarchy', os.path.join(SHIPPED, 'challenge-2019-label300-segmentable-hierarchy.json'),
                    '--classes', os.path.join(SHIPPED, 'challenge-2019-classes-description-segmentable.csv'),
                    '--images-dir', str(root / 'validation')])
    assert re.search(r'mAP@0\.5IOU=1\.0+\b', proc.stdout), proc.stdout


@pytest.mark.parametrize('value, message', [
    ('extreme', "error: --difficulty: 'extreme' is neither easy, medium, hard nor a number"),
    ('1.5', 'error: --difficulty: 1.5 is outside [0, 1]'),
])
def test_bad_difficulty_is_a_one_line_error(tmp_path, value, message):
    r = subprocess.run([sys.executable, '-m', 'util.data.synthetic', '--out', str(tmp_path / 'x'),
                        '--difficulty', value, '--no-progress'], cwd=REPO, capture_output=True, text=True,
                       check=False)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [message]
