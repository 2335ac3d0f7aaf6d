"""Rebalancing by rank bands: the band rules on a small known case, even spreading, the CLI."""
import csv
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from util.common.errors import DataError
from util.common.hierarchy import load_default
from util.data.annotations import make_metainfo, save_annotations
from util.data.rebalance import (
    Band,
    class_images,
    draw_round,
    parse_bands,
    rank_classes,
    rebalance,
    spread_evenly,
)

BANDS = 'down:0-0:8,keep:1-1,up:2-3:14,repeat:4-:3'


def known_case():
    """5 classes over 40 images. Image 20 holds class 1 (kept) and class 3 (topped up)."""
    return [np.arange(0, 20), np.arange(20, 30), np.arange(30, 36), np.array([20, 36, 37, 38]),
            np.array([39])]


def test_parse_bands_and_presets():
    assert parse_bands(BANDS) == [Band('down', 0, 0, 8), Band('keep', 1, 1, None), Band('up', 2, 3, 14),
                                  Band('repeat', 4, None, 3)]
    leaf = parse_bands('leaf')
    assert [(b.kind, b.first, b.last, b.value) for b in leaf] == [
        ('down', 0, 23, 6000), ('keep', 24, 63, None), ('up', 64, 240, 1500), ('repeat', 241, None, 10)]
    assert len(parse_bands('parent')) == 3
    for bad in ('down:0-3', 'keep:0-3:5', 'up:5-2:10', 'down:0-5:10,keep:5-9', 'sideways:0-1:2'):
        with pytest.raises(DataError):
            parse_bands(bad)


def test_band_rules_on_a_known_case():
    imgs = known_case()
    assert rank_classes(imgs).tolist() == [0, 1, 2, 3, 4]
    for seed in range(5):
        c = draw_round(imgs, parse_bands(BANDS), 40, np.random.default_rng(seed))
        # down: 8 distinct images of class 0, once each
        assert np.bincount(c[0:20], minlength=2).tolist() == [12, 8]
        # keep: every image of class 1 once; image 20 also carries class 3's draws
        assert (c[21:30] == 1).all()
        # up, rarest first: class 3 already has 1 draw (image 20, kept for class 1) -> 13 more =
        # 3 whole repeats of its 4 images + 1 at random; total exactly 14
        assert c[imgs[3]].sum() == 14
        assert sorted((c[imgs[3]] - np.array([1, 0, 0, 0])).tolist()) == [3, 3, 3, 4]
        # up: class 2 (6 images) -> 2 whole repeats + 2 at random
        assert sorted(c[30:36].tolist()) == [2, 2, 2, 2, 3, 3]
        # repeat x3
        assert c[39] == 3


def test_up_band_counts_draws_for_other_classes():
    # Class 1 (rank 1, up to 5) lives in images that class 0 (kept) already drew 4 times.
    imgs = [np.arange(0, 6), np.array([0, 1, 2, 3])]
    c = draw_round(imgs, parse_bands('keep:0-0,up:1-1:5'), 6, np.random.default_rng(0))
    assert c[:4].sum() == 5 and c.sum() == 7


def test_spread_evenly():
    counts = np.ones(1000, np.int64)
    counts[7], counts[8], counts[9] = 10, 4, 0
    order = spread_evenly(counts, np.random.default_rng(0))
    assert np.bincount(order, minlength=1000).tolist() == counts.tolist()
    n = len(order)
    for image, c in ((7, 10), (8, 4)):
        pos = np.flatnonzero(order == image)
        gaps = np.diff(pos)
        assert gaps.min() > 0.6 * n / c and gaps.max() < 1.4 * n / c


def test_rounds_are_seeded_and_concatenated():
    imgs = known_case()
    bands = parse_bands(BANDS)
    a = rebalance(imgs, 40, bands, rounds=3, seed=1)
    assert a.dtype == np.int64
    assert np.array_equal(a, rebalance(imgs, 40, bands, rounds=3, seed=1))
    one = len(rebalance(imgs, 40, bands, rounds=1, seed=1))
    assert len(a) == 3 * one and np.array_equal(a[:one], rebalance(imgs, 40, bands, rounds=1, seed=1))
    assert not np.array_equal(a[:one], a[one:2 * one])   # each round has its own seed


def test_class_images_from_data_list():
    inst = lambda k, ignore=0: {'bbox_label': k, 'ignore_flag': ignore}  # noqa: E731
    data_list = [{'instances': [inst(2), inst(2), inst(0)]}, {'instances': []},
                 {'instances': [inst(1, ignore=1), inst(2)]}]
    got = class_images(data_list, 3)
    assert [g.tolist() for g in got] == [[0], [], [0, 2]]
    with pytest.raises(DataError):
        class_images(data_list, 2)


def test_cli_writes_indices_and_report(tmp_path):
    meta = make_metainfo(load_default(), 'leaf')
    data_list = []
    for k, imgs in enumerate(known_case()):
        for i in imgs:
            while len(data_list) <= i:
                data_list.append({'img_id': f'{len(data_list):016x}', 'img_path': 'x.jpg', 'width': 4,
                                  'height': 4, 'instances': []})
            data_list[i]['instances'].append({'bbox': [0, 0, 2, 2], 'bbox_label': k,
                                              'mask': {'size': [4, 4], 'counts': '04000'}, 'ignore_flag': 0})
    ann = tmp_path / 'ann.pkl'
    save_annotations(str(ann), meta, data_list)
    out = tmp_path / 'idx.npy'
    r = subprocess.run([sys.executable, '-m', 'util.data.rebalance', str(ann), '--out', str(out), '--bands', BANDS,
                        '--rounds', '2', '--seed', '3'], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    idx = np.load(out)
    assert idx.dtype == np.int64 and idx.min() >= 0 and idx.max() < len(data_list)
    with open(tmp_path / 'idx.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 275
    top = {r['name']: r for r in rows[:5]}
    assert top[meta['classes'][0]]['band'] == 'down' and top[meta['classes'][0]]['images_before'] == '20'
    assert float(top[meta['classes'][3]]['draws_per_round']) == 14
    assert (tmp_path / 'idx.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    r = subprocess.run([sys.executable, '-m', 'util.data.rebalance', str(ann), '--out', str(tmp_path / 'y.npy'),
                        '--bands', 'down:0-3'], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.count('\n') == 1 and 'down:0-3' in r.stderr
    assert not (tmp_path / 'y.npy').exists()
