"""Test shards: consecutive, near-equal, every test image exactly once; sizes from the CSV or the JPEGs."""
import csv
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO
from hypothesis import given, settings
from hypothesis import strategies as st

from util.common.cli import run
from util.common.errors import DataError
from util.data.annotations import load_annotations
from util.data.shards import main, shard_bounds, shard_name
from util.data.synthetic import generate


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 200))
def test_bounds_cover_everything_once(total, n):
    if n > total:
        with pytest.raises(DataError):
            shard_bounds(total, n)
        return
    b = shard_bounds(total, n)
    assert len(b) == n and b[0][0] == 0 and b[-1][1] == total
    assert all(e == s for (_, e), (s, _) in zip(b, b[1:]))
    sizes = [e - s for s, e in b]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_challenge_test_set_in_25_shards():
    sizes = [e - s for s, e in shard_bounds(99_999, 25)]
    assert sizes == [4000] * 24 + [3999]
    assert shard_name(0, 25) == 'shard_00_of_25.pkl' and shard_name(123, 200, '.json') == 'shard_123_of_200.json'


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp('oid')
    generate(str(out), seed=9, train=0, val=0, test=7, progress=False)
    return out


def read_sample(path):
    with open(path, newline='') as f:
        return [(r['ImageID'], int(r['ImageWidth']), int(r['ImageHeight'])) for r in csv.DictReader(f)]


def test_cli_from_sample_csv_and_from_images(data, tmp_path):
    sample = read_sample(data / 'sample_empty_submission.csv')
    r = subprocess.run([sys.executable, '-m', 'util.data.shards', '--sample-csv', str(data / 'sample_empty_submission.csv'),
                        '--out', str(tmp_path / 'a'), '--num-shards', '3'], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / 'a' / 'manifest.json').read_text())
    assert manifest['num_shards'] == 3 and manifest['num_images'] == 7
    assert [s['file'] for s in manifest['shards']] == [f'shard_{i:02d}_of_03.pkl' for i in range(3)]
    got = []
    for s in manifest['shards']:
        ann = load_annotations(str(tmp_path / 'a' / s['file']))
        assert len(ann['metainfo']['classes']) == 275 and len(ann['data_list']) == s['images']
        assert all(i['instances'] == [] and i['img_path'] == f'{i["img_id"]}.jpg' for i in ann['data_list'])
        got += [(i['img_id'], i['width'], i['height']) for i in ann['data_list']]
    assert got == sample                                   # every id once, in CSV order, CSV sizes
    assert [s['images'] for s in manifest['shards']] == [3, 2, 2]

    # From the images folder: sorted ids, sizes from the JPEG headers; the same images and sizes.
    assert run(main, ['--images-dir', str(data / 'test'), '--out', str(tmp_path / 'b'), '--num-shards', '2',
                      '--format', 'json', '--subset', 'parent', '--no-progress',
                      '--id-list', str(tmp_path / 'b-ids.csv')]) == 0
    items = []
    for i in range(2):
        ann = load_annotations(str(tmp_path / 'b' / f'shard_{i:02d}_of_02.json'))
        assert len(ann['metainfo']['classes']) == 23
        items += [(i['img_id'], i['width'], i['height']) for i in ann['data_list']]
    assert items == sorted(sample)
    # The id list is an empty submission of the same images, in shard order.
    assert read_sample(tmp_path / 'b-ids.csv') == items
    with open(tmp_path / 'b-ids.csv') as f:
        assert next(csv.reader(f)) == ['ImageID', 'ImageWidth', 'ImageHeight', 'PredictionString']


def test_bad_sample_csv(data, tmp_path, capsys):
    bad = tmp_path / 'sample.csv'
    rows = (data / 'sample_empty_submission.csv').read_text().splitlines()
    bad.write_text('\n'.join(rows + [rows[2]]) + '\n')
    assert run(main, ['--sample-csv', str(bad), '--out', str(tmp_path / 'o')]) == 1
    dup = rows[2].split(',')[0]
    assert capsys.readouterr().err.strip() == f'error: {bad}:{len(rows) + 1}: image {dup} listed twice'
    assert not (tmp_path / 'o').exists()
    assert run(main, ['--sample-csv', str(data / 'sample_empty_submission.csv'), '--out', str(tmp_path / 'o'),
                      '--num-shards', '8']) == 1
    assert 'more than the 7 images' in capsys.readouterr().err


def plan(*args):
    return subprocess.run([sys.executable, '-m', 'util.data.shards', 'plan', *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_plan_reads_the_manifest_and_names_splits_like_the_files(data, tmp_path):
    """scripts/test_shards.sh takes its shard list from here: the manifest's files, or one file split N ways."""
    out = tmp_path / 'shards'
    assert run(main, ['--sample-csv', str(data / 'sample_empty_submission.csv'), '--out', str(out),
                      '--num-shards', '3', '--no-progress']) == 0
    p = plan('--shards-dir', str(out))
    assert p.returncode == 0, p.stderr
    rows = [line.split('\t') for line in p.stdout.splitlines()]
    manifest = json.loads((out / 'manifest.json').read_text())
    assert rows == [[e['file'][:-4], str(out / e['file']), ''] for e in manifest['shards']]

    split = plan('--ann-file', str(out / rows[0][1]), '--num-shards', '3')
    assert split.returncode == 0, split.stderr
    assert [line.split('\t') for line in split.stdout.splitlines()] == [
        [rows[i][0], rows[0][1], f'{i}/3'] for i in range(3)]      # same names as the written shard files

    os.remove(out / manifest['shards'][1]['file'])
    gone = plan('--shards-dir', str(out))
    assert gone.returncode == 1 and 'Traceback' not in gone.stderr
    assert gone.stderr.strip() == f'error: {out / "manifest.json"}: shard file {manifest["shards"][1]["file"]} not found'
    os.remove(out / 'manifest.json')
    none = plan('--shards-dir', str(out))
    assert none.returncode == 1 and none.stderr.strip().startswith(f'error: {out / "manifest.json"}: no shard manifest')
