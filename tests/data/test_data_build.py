"""Masks CSV + PNGs + images -> annotation files: resizing, RLE, boxes, expansion, hold-out, bad rows."""
import csv
import gzip
import os
import shutil
import subprocess
import sys
from collections import defaultdict

import pytest
from conftest import REPO
from PIL import Image

from util.common.cli import run
from util.common.hierarchy import load_default
from util.common.image_io import read_mask
from util.common.mask_codec import decode_rle, encode_binary, resize_nearest
from util.data.annotations import load_annotations
from util.data.build import build, main, make_source
from util.data.synthetic import generate

TEDDY = '/m/0kmg4'
TRAIN_CSV = 'challenge-2019-train-segmentation-masks.csv'
VAL_CSV = 'challenge-2019-validation-segmentation-masks.csv'


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp('oid')
    generate(str(out), seed=5, train=12, val=8, test=2, progress=False)
    return out


def csv_rows(path):
    """{image_id: [row dict, ...]} in file order."""
    rows = defaultdict(list)
    with open(path, newline='') as f:
        for r in csv.DictReader(f):
            rows[r['ImageID']].append(r)
    return rows


def cli(*args):
    return subprocess.run([sys.executable, '-m', 'util.data.build', '--no-progress', *map(str, args)],
                          cwd=REPO, capture_output=True, text=True)


def test_masks_resized_to_image_size_boxes_in_pixels(data):
    meta, train, val, problems, outside, done = build([make_source(str(data / TRAIN_CSV))], 'leaf',
                                                      progress=False)
    rows = csv_rows(data / TRAIN_CSV)
    assert not problems and not val and outside == 0
    assert done == sum(len(v) for v in rows.values()) == sum(len(i['instances']) for i in train)
    assert [i['img_id'] for i in train] == sorted(rows)
    for item in train:
        w, h = Image.open(data / 'train' / item['img_path']).size
        assert (item['width'], item['height']) == (w, h)
        assert item['img_path'] == f'{item["img_id"]}.jpg'
        for inst, row in zip(item['instances'], rows[item['img_id']], strict=True):
            assert meta['mids'][inst['bbox_label']] == row['LabelName']
            assert inst['mask']['size'] == [h, w] and isinstance(inst['mask']['counts'], str)
            png = read_mask(str(data / f'train-masks-{item["img_id"][0]}' / row['MaskPath']))
            assert png.shape != (h, w)
            dense = decode_rle(inst['mask'])
            assert (dense == resize_nearest(png, h, w)).all()
            assert encode_binary(dense)['counts'] == inst['mask']['counts']     # RLE round trip
            expected = [float(row['BoxXMin']) * w, float(row['BoxYMin']) * h,
                        float(row['BoxXMax']) * w, float(row['BoxYMax']) * h]
            assert inst['bbox'] == pytest.approx(expected)
            assert all(type(v) is float for v in inst['bbox'])     # plain floats, not numpy scalars
            assert inst['ignore_flag'] == 0


def test_parent_subsets_emit_every_ancestor(data):
    h = load_default()
    rows = csv_rows(data / TRAIN_CSV)
    for subset in ('parent25', 'parent'):
        meta, train, *_ = build([make_source(str(data / TRAIN_CSV))], subset, progress=False)
        items = {i['img_id']: i for i in train}
        wanted = set(meta['mids'])
        teddies = 0
        for image_id, rs in rows.items():
            expected = [(m, r['MaskPath']) for r in rs for m in h.expand(r['LabelName']) if m in wanted]
            got = items[image_id]['instances'] if image_id in items else []
            assert sorted(meta['mids'][i['bbox_label']] for i in got) == sorted(m for m, _ in expected)
            by_mask = defaultdict(set)          # copies of one mask share its RLE
            for i in got:
                by_mask[i['mask']['counts']].add(meta['mids'][i['bbox_label']])
            n_teddy = sum(r['LabelName'] == TEDDY for r in rs)
            teddy_copies = {'/m/0138tl', '/m/01dws'} | ({'/m/01lrl'} if subset == 'parent25' else set())
            assert sum(labels == teddy_copies for labels in by_mask.values()) == n_teddy
            teddies += n_teddy
        assert teddies, 'the fixture should hold a Teddy bear'


def test_cli_two_csvs_two_workers_and_holdout(data, tmp_path):
    out, val_out = tmp_path / 'train.pkl', tmp_path / 'val.json'
    r = cli('--masks-csv', data / TRAIN_CSV, '--masks-csv', data / VAL_CSV, '--subset', 'leaf',
            '--out', out, '--val-out', val_out, '--val-count', 3, '--holdout-from', 'validation',
            '--seed', 1, '--workers', 2)
    assert r.returncode == 0, r.stderr
    train, val = load_annotations(str(out)), load_annotations(str(val_out))
    val_ids = set(csv_rows(data / VAL_CSV))
    held = {i['img_id'] for i in val['data_list']}
    assert len(held) == 3 and held <= val_ids
    assert not held & {i['img_id'] for i in train['data_list']}
    assert all(i['img_path'].startswith('validation/') for i in val['data_list'])
    # One worker in-process gives the same result; the same seed picks the same images.
    sources = [make_source(str(data / TRAIN_CSV)), make_source(str(data / VAL_CSV))]
    meta, t1, v1, *_ = build(sources, 'leaf', val_count=3, holdout_from=['validation'], seed=1,
                             progress=False)
    assert t1 == train['data_list'] and v1 == val['data_list'] and meta == train['metainfo']
    _, _, v2, *_ = build(sources, 'leaf', val_count=3, holdout_from=['validation'], seed=2, progress=False)
    assert {i['img_id'] for i in v2} != held


def test_bad_rows_counted_and_fatal_with_strict(data, tmp_path):
    root = tmp_path / 'bad'
    shutil.copytree(data / 'train', root / 'train')
    for d in data.glob('train-masks-*'):
        shutil.copytree(d, root / d.name)
    lines = (data / TRAIN_CSV).read_text().splitlines()
    first = lines[1].split(',')
    image_id = first[1]

    def variant(**kw):
        r = dict(zip(lines[0].split(','), first))
        r.update(kw)
        return ','.join(r.values())

    bad = [variant(LabelName='/m/notaclass'),                            # line n+2: unknown label
           variant(BoxXMin='0.7', BoxXMax='0.2'),                        # degenerate box
           variant(MaskPath=f'{image_id}_gone_00000000.png'),            # missing PNG
           variant(ImageID='0123456789abcdef', MaskPath='0123456789abcdef_x_1.png'),  # missing image
           variant(LabelName='/m/01g317')]                               # Person: outside the leaves
    csv_path = root / TRAIN_CSV
    csv_path.write_text('\n'.join(lines + bad) + '\n')
    n = len(lines)
    out = tmp_path / 'leaf.pkl'
    r = cli('--masks-csv', csv_path, '--out', out)
    assert r.returncode == 0, r.stderr
    report = r.stderr
    assert '4 rows could not be used' in report and '1 rows skipped: label outside' in report
    for reason in ('unknown label', 'degenerate box', 'missing mask PNG', 'missing image'):
        assert f'1  {reason}' in report
    assert f'{csv_path}:{n + 1}: image {image_id}: unknown label' in report
    good = load_annotations(str(out))['data_list']
    assert sum(len(i['instances']) for i in good) == n - 1

    strict_out = tmp_path / 'strict.pkl'
    r = cli('--masks-csv', csv_path, '--out', strict_out, '--strict')
    assert r.returncode == 1
    assert r.stderr.strip() == f"error: {csv_path}:{n + 1}: image {image_id}: unknown label '/m/notaclass'"
    assert not strict_out.exists() and not os.path.exists(f'{strict_out}.tmp')

    # Worker-side problems are fatal too under --strict, named by file:line.
    csv_path.write_text('\n'.join(lines + bad[2:3]) + '\n')
    assert run(main, ['--masks-csv', str(csv_path), '--out', str(strict_out), '--strict', '--no-progress']) == 1
    assert not strict_out.exists()


def test_missing_column_and_8bit_masks(data, tmp_path, capsys):
    bad_csv = tmp_path / TRAIN_CSV
    bad_csv.write_text('MaskPath,ImageID,LabelName\n')
    (tmp_path / 'train').mkdir()
    assert run(main, ['--masks-csv', str(bad_csv), '--out', str(tmp_path / 'x.pkl'), '--no-progress']) == 1
    err = capsys.readouterr().err.strip()
    assert err == f'error: {bad_csv}:1: missing column(s) BoxXMin, BoxXMax, BoxYMin, BoxYMax'
    # 8-bit 0/255 PNGs (flat folder layout) give the same RLE as the 1-bit ones.
    flat = tmp_path / 'flat'
    flat.mkdir()
    for png in data.glob('train-masks-*/*.png'):
        Image.fromarray(read_mask(str(png)) * 255).save(flat / png.name)
    src_flat = make_source(str(data / TRAIN_CSV), masks_dir=str(flat))
    assert src_flat.flat_masks
    a = build([src_flat], 'leaf', progress=False)[1]
    b = build([make_source(str(data / TRAIN_CSV))], 'leaf', progress=False)[1]
    assert a == b


def copy_train(data, root):
    """A copy of the fixture's train split (CSV, images, PNGs) that a test may damage."""
    shutil.copytree(data / 'train', root / 'train')
    for d in data.glob('train-masks-*'):
        shutil.copytree(d, root / d.name)
    shutil.copy(data / TRAIN_CSV, root / TRAIN_CSV)
    return root / TRAIN_CSV


def one_error_line(r, *expected):
    assert r.returncode == 1, r.stdout + r.stderr
    assert 'Traceback' not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), lines     # no libpng / libjpeg chatter either
    for text in expected:
        assert text in lines[0], lines[0]


def cut(path, fraction=0.7):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])


def flip_byte(path, at=0.6):
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize('damage', ['jpeg-cut', 'png-cut', 'png-flipped-byte'])
def test_strict_decodes_images_and_masks(data, tmp_path, damage):
    """A JPEG cut to 70% keeps its header: only --strict, which decodes every image, notices it. A damaged
    mask PNG is unusable in both modes. Either way, one line names the CSV row, and the decoders print nothing."""
    csv_path = copy_train(data, tmp_path)
    row = next(csv.DictReader(open(csv_path, newline='')))
    image_id = row['ImageID']
    if damage == 'jpeg-cut':
        cut(tmp_path / 'train' / f'{image_id}.jpg')
        expected = (f'{csv_path}:2: image {image_id}: unreadable image', 'does not decode')
    else:
        png = tmp_path / f'train-masks-{image_id[0]}' / row['MaskPath']
        cut(png) if damage == 'png-cut' else flip_byte(png)
        expected = (f'{csv_path}:2: image {image_id}: unreadable mask PNG: {png}: mask PNG does not decode',)
    lenient = cli('--masks-csv', csv_path, '--out', tmp_path / 'lenient.pkl')
    assert lenient.returncode == 0 and 'libpng' not in lenient.stderr and 'JPEG' not in lenient.stderr
    assert ('1  unreadable mask PNG' in lenient.stderr) == (damage != 'jpeg-cut')
    out = tmp_path / 'strict.pkl'
    one_error_line(cli('--masks-csv', csv_path, '--out', out, '--strict'), *expected)
    assert not out.exists() and not os.path.exists(f'{out}.tmp')


@pytest.mark.parametrize('strict', [False, True])
@pytest.mark.parametrize('damage, expected', [
    ('truncated-row', ':3: truncated row: 4 fields, the header has 10'),
    ('gzip', ': not UTF-8 text (gzip data): is it compressed?'),
    ('latin-1', ':2: not UTF-8 text (byte '),
])
def test_damaged_csv_is_fatal_and_named(data, tmp_path, damage, expected, strict):
    csv_path = copy_train(data, tmp_path)
    raw = csv_path.read_bytes()
    if damage == 'truncated-row':
        lines = raw.decode().split('\n')
        lines[2] = ','.join(lines[2].split(',')[:4])
        csv_path.write_text('\n'.join(lines))
    elif damage == 'gzip':
        csv_path.write_bytes(gzip.compress(raw))
    else:
        csv_path.write_bytes(raw.replace(b'/m/', '/m/\u00e9'.encode('latin-1'), 1))
    out = tmp_path / 'x.pkl'
    one_error_line(cli('--masks-csv', csv_path, '--out', out, *(['--strict'] if strict else [])),
                   f'{csv_path}{expected}')
    assert not out.exists()


def test_a_bom_is_accepted(data, tmp_path):
    csv_path = copy_train(data, tmp_path)
    csv_path.write_bytes(b'\xef\xbb\xbf' + csv_path.read_bytes())
    a = build([make_source(str(csv_path))], 'leaf', progress=False)
    b = build([make_source(str(data / TRAIN_CSV))], 'leaf', progress=False)
    assert not a[3] and a[1] == b[1]
