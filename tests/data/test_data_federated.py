"""Federated annotation fields: verified classes expanded as the metric expands them, box-only boxes as the
metric's join leaves them, old files unchanged, bad rows named."""
import csv
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from conftest import REPO

from util.common.hierarchy import load_default
from util.data.annotations import is_federated, load_annotations, save_annotations
from util.data.build import build, make_source
from util.common.hierarchy import ClassIndex
from util.data.federated import unjoined_boxes
from util.data.synthetic import generate
from util.metric.groundtruth import read_ground_truth
from util.metric.rules import Classes, expand_ground_truth

TRAIN = 'challenge-2019-train-segmentation-{}.csv'
VAL = 'challenge-2019-validation-segmentation-{}.csv'


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """A federated synthetic download: the train split has bbox and labels CSVs (with box-only boxes)."""
    out = tmp_path_factory.mktemp('fed')
    generate(str(out), seed=3, train=24, val=10, test=1, federated=True, progress=False)
    return out


def federated_build(data, split_name, subset):
    src = make_source(str(data / split_name.format('masks')))
    return build([src], subset, img_root=str(data), progress=False,
                 bbox_csvs=[str(data / split_name.format('bbox'))],
                 labels_csvs=[str(data / split_name.format('labels'))])


def test_expansion_is_the_metrics_on_the_real_hierarchy():
    """One rule for both (util.common.hierarchy.ClassIndex): every label up to its ancestors, down to its
    descendants, within the full list and two subsets."""
    h = load_default()
    assert issubclass(Classes, ClassIndex)          # the metric scores by the same expansion
    for subset in ('all', 'parent25', 'leaf'):
        mids = h.subset(subset)
        ours = ClassIndex(mids, h)
        for mid in h.order:
            assert {mids[i] for i in ours.up(mid)} == ({mid} | h.ancestors(mid)) & set(mids), (subset, mid)
            assert {mids[i] for i in ours.down(mid)} == ({mid} | h.descendants(mid)) & set(mids), (subset, mid)
    # Teddy bear has two parents: a positive reaches Toy, Bear and Carnivore; a negative Bear covers Teddy.
    all_mids = ClassIndex(h.order, h)
    teddy, bear = '/m/0kmg4', '/m/01dws'
    assert {h.order[i] for i in all_mids.up(teddy)} == {teddy, *h.ancestors(teddy)} and len(all_mids.up(teddy)) == 4
    assert h.rank[teddy] in all_mids.down(bear)


@pytest.mark.parametrize('split_name', [TRAIN, VAL])
@pytest.mark.parametrize('subset', ['leaf', 'parent25', 'all'])
def test_verified_classes_are_the_metric_evaluatable_classes(data, split_name, subset):
    """Per image, verified_pos + verified_neg = the classes the metric evaluates for that image."""
    h = load_default()
    meta, items, _, problems, _, _ = federated_build(data, split_name, subset)
    assert items and not problems
    assert all(is_federated(it) for it in items)
    gt = read_ground_truth(str(data / split_name.format('masks')), str(data / split_name.format('bbox')),
                           str(data / split_name.format('labels')), set(h.order))
    classes = Classes(meta['mids'], h)
    negatives = 0
    for item in items:
        rec = gt.images[item['img_id']]
        _, evaluatable = expand_ground_truth(rec.labels, rec.image_labels, classes)
        assert set(item['verified_pos']) | set(item['verified_neg']) == evaluatable, item['img_id']
        assert {i['bbox_label'] for i in item['instances']} <= set(item['verified_pos'])
        negatives += len(item['verified_neg'])
    assert negatives > 0 or subset == 'parent25'   # the synthetic negatives are leaves: none is a parent


def test_box_only_instances_are_the_metric_box_only_gt(data):
    """Ignore instances = bbox rows the metric's mask join leaves without a mask, group-of kept."""
    h = load_default()
    meta, items, _, _, _, _ = federated_build(data, TRAIN, 'leaf')
    gt = read_ground_truth(str(data / TRAIN.format('masks')), str(data / TRAIN.format('bbox')),
                           str(data / TRAIN.format('labels')), set(h.order))
    ours, theirs = Counter(), Counter()
    for item in items:
        w, h_ = item['width'], item['height']
        for inst in item['instances']:
            if inst['ignore_flag']:
                assert 'mask' not in inst
                x1, y1, x2, y2 = inst['bbox']
                ours[(item['img_id'], meta['mids'][inst['bbox_label']],
                      tuple(round(v, 3) for v in (y1 / h_, x1 / w, y2 / h_, x2 / w)), bool(inst['group_of']))] += 1
            else:
                assert inst['mask']['size'] == [h_, w]
        rec = gt.images[item['img_id']]
        for label, box, group, mask in zip(rec.labels, rec.boxes, rec.group_of, rec.mask_files):
            if mask is None:
                theirs[(item['img_id'], label, tuple(round(v, 3) for v in box), bool(group))] += 1
    assert sum(ours.values()) > 0 and ours == theirs
    assert any(k[3] for k in ours), 'the synthetic set has box-only group-of boxes'


def test_join_is_one_to_one_best_iou_first():
    masks = [[0, 0, 10, 10]]
    boxes = [[1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]]
    # One mask: it joins the exact box; the near copy and the far box stay box-only.
    assert unjoined_boxes(np.asarray(masks, float), np.asarray(boxes, float)).tolist() == [0, 2]
    # Two masks on two overlapping boxes: each joins its own best box, none is box-only.
    masks2 = np.asarray([[0, 0, 10, 10], [1, 1, 10, 10]], float)
    assert unjoined_boxes(masks2, np.asarray([[1, 1, 10, 10], [0, 0, 10, 10]], float)).tolist() == []
    assert unjoined_boxes(np.zeros((0, 4)), np.asarray(boxes, float)).tolist() == [0, 1, 2]


def test_without_flags_the_old_format_is_written_and_old_files_load(data, tmp_path):
    meta, items, _, _, _, _ = build([make_source(str(data / TRAIN.format('masks')))], 'leaf', img_root=str(data),
                                    progress=False)
    assert not any(is_federated(it) for it in items)
    assert all(i['ignore_flag'] == 0 and 'mask' in i for it in items for i in it['instances'])
    path = tmp_path / 'old.pkl'
    save_annotations(str(path), meta, items)
    assert load_annotations(str(path))['data_list'] == items


def test_instance_without_mask_must_be_an_ignore_region(data, tmp_path):
    meta, items, _, _, _, _ = federated_build(data, TRAIN, 'leaf')
    path = tmp_path / 'fed.json'
    save_annotations(str(path), meta, items)
    assert load_annotations(str(path))['data_list'] == items
    bad = [dict(items[0], instances=[{'bbox': [0, 0, 5, 5], 'bbox_label': 1, 'ignore_flag': 0}])]
    save_annotations(str(path), meta, bad)
    with pytest.raises(Exception, match=r'fed\.json: image .*ignore_flag 1'):
        load_annotations(str(path))


def cli(*args):
    return subprocess.run([sys.executable, '-m', 'util.data.build', '--no-progress', *map(str, args)],
                          cwd=REPO, capture_output=True, text=True)


def test_cli_writes_the_fields_and_names_a_bad_labels_row(data, tmp_path):
    out = tmp_path / 'ann.pkl'
    ok = cli('--masks-csv', data / TRAIN.format('masks'), '--img-root', data, '--out', out,
             '--bbox-csv', data / TRAIN.format('bbox'), '--labels-csv', data / TRAIN.format('labels'))
    assert ok.returncode == 0, ok.stderr
    items = load_annotations(str(out))['data_list']
    assert all(is_federated(it) for it in items) and any(i['ignore_flag'] for it in items for i in it['instances'])

    bad = tmp_path / 'labels.csv'
    rows = list(csv.reader(open(data / TRAIN.format('labels'))))
    rows[3][2] = '0.5'
    with open(bad, 'w', newline='') as f:
        csv.writer(f).writerows(rows)
    proc = cli('--masks-csv', data / TRAIN.format('masks'), '--img-root', data, '--out', out, '--labels-csv', bad)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: {bad}:4: Confidence '0.5', expected 0 or 1"]


def test_images_the_csvs_do_not_mention_keep_the_old_format(data):
    """Train (with its CSVs) merged with validation (without): only the train images become federated."""
    sources = [make_source(str(data / TRAIN.format('masks'))), make_source(str(data / VAL.format('masks')))]
    _, items, _, _, _, _ = build(sources, 'leaf', img_root=str(data), progress=False,
                                 bbox_csvs=[str(data / TRAIN.format('bbox'))],
                                 labels_csvs=[str(data / TRAIN.format('labels'))])
    train_ids = {r['ImageID'] for r in csv.DictReader(open(data / TRAIN.format('masks')))}
    assert {it['img_id'] for it in items if is_federated(it)} == {it['img_id'] for it in items} & train_ids
    assert any(not is_federated(it) for it in items)
