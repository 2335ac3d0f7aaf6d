"""Damaged ground-truth files given to ``python -m util.metric.evaluate``: one line naming the file (and line),
exit status 1, no traceback; and the warnings about the GT join name the row they are about."""
from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys

import pytest
from _eval_files import write_dataset
from conftest import REPO

FLAG = {'masks': '--masks-csv', 'bbox': '--bbox-csv', 'labels': '--labels-csv'}


@pytest.fixture(scope='module')
def ds(tmp_path_factory):
    return write_dataset(str(tmp_path_factory.mktemp('oid_bad_gt')), n_images=8, seed=5)


def evaluate(ds, **replaced):
    """Run the command with some GT CSVs replaced: {'bbox': path, ...} -> CompletedProcess."""
    args = ds.args()
    for kind, path in replaced.items():
        args[args.index(FLAG[kind]) + 1] = str(path)
    return subprocess.run([sys.executable, '-m', 'util.metric.evaluate', *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def one_error_line(proc, *expected):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert 'Traceback' not in proc.stderr and not proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), lines
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def edit_row(path, out, line, edit):
    """Copy the CSV at ``path`` to ``out`` with data line ``line`` (1-based, header = 1) passed through ``edit``."""
    lines = open(path, newline='').read().split('\n')
    lines[line - 1] = edit(lines[line - 1].split(','))
    with open(out, 'w', newline='') as f:
        f.write('\n'.join(lines))
    return out


def set_fields(**values):
    """An edit that sets bbox CSV fields by name (ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf)."""
    names = ['ImageID', 'LabelName', 'XMin', 'XMax', 'YMin', 'YMax', 'IsGroupOf']

    def edit(fields):
        for k, v in values.items():
            fields[names.index(k)] = v
        return ','.join(fields)
    return edit


@pytest.mark.parametrize('values, expected', [
    (dict(XMin='0.7', XMax='0.2'), 'XMin 0.7 > XMax 0.2'),
    (dict(YMin='0.9', YMax='0.3'), 'YMin 0.9 > YMax 0.3'),
    (dict(XMax='1.2'), 'XMax 1.2 is outside [0, 1]'),
    (dict(YMin='-0.1'), 'YMin -0.1 is outside [0, 1]'),
], ids=['xmin>xmax', 'ymin>ymax', 'above-1', 'below-0'])
def test_impossible_bbox_rows_are_errors(ds, tmp_path, values, expected):
    bad = edit_row(ds.path('bbox.csv'), tmp_path / 'bbox.csv', 3, set_fields(**values))
    one_error_line(evaluate(ds, bbox=bad), f'{bad}:3: {expected}')


@pytest.mark.parametrize('kind', ['masks', 'bbox', 'labels'])
def test_truncated_rows_are_reported_as_truncated(ds, tmp_path, kind):
    src = ds.path(f'{kind}.csv')
    width = len(open(src).readline().split(','))
    bad = edit_row(src, tmp_path / f'{kind}.csv', 3, lambda fields: ','.join(fields[:2]))
    one_error_line(evaluate(ds, **{kind: bad}), f'{bad}:3: truncated row: 2 fields, the header has {width}')


@pytest.mark.parametrize('kind', ['masks', 'bbox', 'labels'])
@pytest.mark.parametrize('damage', ['gzip', 'latin-1'])
def test_csv_that_is_not_utf8_text_is_named(ds, tmp_path, kind, damage):
    src, bad = ds.path(f'{kind}.csv'), tmp_path / f'{kind}.csv'
    data = open(src, 'rb').read()
    if damage == 'gzip':
        bad.write_bytes(gzip.compress(data))
    else:                                                     # an accented label written by a latin-1 tool
        bad.write_bytes(data.replace(b'/m/', '/m/\u00e9'.encode('latin-1'), 1))
    expected = f'{bad}: not UTF-8 text (gzip data)' if damage == 'gzip' else f'{bad}:2: not UTF-8 text (byte '
    one_error_line(evaluate(ds, **{kind: bad}), expected, '): is it compressed?')


def test_a_bom_is_accepted(ds, tmp_path):
    good = evaluate(ds)
    assert good.returncode == 0, good.stderr
    paths = {}
    for kind in FLAG:
        paths[kind] = tmp_path / f'{kind}.csv'
        paths[kind].write_bytes(b'\xef\xbb\xbf' + open(ds.path(f'{kind}.csv'), 'rb').read())
    bom = evaluate(ds, **paths)
    assert bom.returncode == 0, bom.stderr
    assert bom.stdout.splitlines()[-1] == good.stdout.splitlines()[-1]


def test_an_unbalanced_quote_is_an_error_naming_its_line(ds, tmp_path):
    bad = edit_row(ds.path('masks.csv'), tmp_path / 'masks.csv', 3,
                   lambda fields: ','.join(fields[:-1] + ['"' + fields[-1]]))
    one_error_line(evaluate(ds, masks=bad), f'{bad}:3: a quoted field runs over lines 3-')


def test_a_mask_row_that_joins_no_box_names_both_rows(ds, tmp_path):
    """The mask row's box row moved away (IoU < 0.5): the warning names the masks CSV row it is about and
    the bbox CSV row it failed to join."""
    masks = open(ds.path('masks.csv')).read().splitlines()
    boxes = open(ds.path('bbox.csv')).read().splitlines()
    name, image_id, label, _, *mbox = masks[1].split(',')[:8]
    line = next(k + 1 for k, b in enumerate(boxes) if b.split(',')[:6] == [image_id, label, *mbox])
    moved = edit_row(ds.path('bbox.csv'), tmp_path / 'bbox.csv', line,
                     lambda f: ','.join(f[:2] + ['0.000000', '0.010000', '0.000000', '0.010000'] + f[6:]))
    shutil.copy(ds.path('masks.csv'), tmp_path / 'masks.csv')
    proc = evaluate(ds, bbox=moved, masks=tmp_path / 'masks.csv')
    assert proc.returncode == 0, proc.stderr
    warning = [w for w in proc.stderr.splitlines() if 'join no box row' in w]
    assert len(warning) == 1
    assert f'{tmp_path / "masks.csv"}:2 (nearest free box row of its label {moved}:{line}, IoU 0.00)' in warning[0]
    assert os.path.exists(moved)
