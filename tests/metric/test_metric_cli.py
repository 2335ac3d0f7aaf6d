"""``python -m util.metric.evaluate`` on small raw files: the literal metric's number, any worker count, strict inputs."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import _eval_literal as literal
import numpy as np
import pytest
from _eval_files import write_dataset
from conftest import REPO
from PIL import Image

from util.common.cli import run
from util.common.hierarchy import load_default, read_class_names
from util.common.mask_codec import encode_mask
from util.common.submission import SubmissionWriter
from util.metric.evaluate import evaluate_files, main


@pytest.fixture(scope='module')
def ds(tmp_path_factory):
    return write_dataset(str(tmp_path_factory.mktemp('oid_eval')), n_images=30, seed=3)


def quiet(*args, **kwargs):
    pass


def evaluate(ds, submission='sub.csv', **kw):
    return evaluate_files(ds.path('masks.csv'), ds.path('masks'), ds.path('bbox.csv'), ds.path('labels.csv'),
                          ds.args()[9], ds.args()[11], ds.path(submission), log=quiet, **kw)


def literal_map(ds, ids=None, ties='official', images=None):
    images = images or {i: ds.images[i] for i in (ids or ds.images)}
    return literal.mean_ap(images, list(read_class_names()), load_default(), ties)[0]


def cli(ds, *extra, submission='sub.csv'):
    """Run main() in-process -> (exit status, stdout lines, stderr)."""
    import contextlib
    import io
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = run(main, ds.args(submission) + list(extra))
    return status, out.getvalue().splitlines(), err.getvalue()


def test_same_map_as_the_literal_rules_for_any_worker_count(ds):
    """The default (the official tie order) sorts the entries by image id before numpy's argsort: the same
    number for any worker count (results arrive in another order), the literal official construction's."""
    values = [evaluate(ds, workers=n).mean_ap for n in (1, 2, 3)]
    assert values[0] == values[1] == values[2]               # to the last digit
    assert values[0] == pytest.approx(literal_map(ds), abs=1e-12)
    assert 0.05 < values[0] < 0.95


def test_fp_first_is_opt_in_and_never_above_the_official_order(ds):
    fp_first = [evaluate(ds, workers=n, ties='fp-first') for n in (1, 2)]
    assert fp_first[0].mean_ap == fp_first[1].mean_ap
    assert fp_first[0].mean_ap == pytest.approx(literal_map(ds, ties='fp-first'), abs=1e-12)
    official = evaluate(ds)
    both = ~np.isnan(official.ap)
    assert (np.isnan(fp_first[0].ap) == ~both).all()
    assert (official.ap[both] >= fp_first[0].ap[both] - 1e-12).all()
    status, out, _ = cli(ds, '--ties', 'fp-first')
    assert status == 0 and out[-1] == f'mAP@0.5IOU={fp_first[0].mean_ap:.10f}'
    status, out, _ = cli(ds, '--ties', 'official')
    assert status == 0 and out[-1] == f'mAP@0.5IOU={official.mean_ap:.10f}'


def test_scores_rounded_to_two_decimals_the_default_is_the_official_order(ds):
    """A submission whose scores are rounded to 2 decimals: the command's default equals the literal
    construction of the official order; FP-first (opt-in) is a different, lower number."""
    rounded = {i: [(lab, round(s, 2), m) for lab, s, m in p] for i, p in ds.predictions.items()}
    ds.write_submission('rounded.csv', rows={i: [(lab, s, encode_mask(m)) for lab, s, m in p]
                                             for i, p in rounded.items()})
    images = {i: dataclasses.replace(img, detections=rounded[i]) for i, img in ds.images.items()}
    status, out, _ = cli(ds, submission='rounded.csv')
    assert status == 0
    official = literal_map(ds, images=images)
    assert float(out[-1].split('=')[1]) == pytest.approx(official, abs=1e-9)
    fp_first = evaluate(ds, 'rounded.csv', ties='fp-first').mean_ap
    assert fp_first == pytest.approx(literal_map(ds, ties='fp-first', images=images), abs=1e-12)
    assert official > fp_first + 1e-4


def test_command_line_end_to_end(ds, tmp_path):
    per_class, plots = tmp_path / 'per_class.csv', tmp_path / 'plots'
    proc = subprocess.run([sys.executable, '-m', 'util.metric.evaluate', *ds.args(), '--workers', '2',
                           '--per-class', str(per_class), '--plots', str(plots)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    expected = evaluate(ds).mean_ap
    assert proc.stdout.splitlines()[-1] == f'mAP@0.5IOU={expected:.10f}'
    assert '1 mask rows join no box row' in proc.stderr       # the mask row written without a box row
    rows = per_class.read_text().splitlines()
    assert rows[0] == 'LabelName,Name,AP,CountedGT,Detections' and len(rows) == 301
    aps = [float(r.split(',')[2]) for r in rows[1:] if r.split(',')[2]]
    assert np.mean(aps) == pytest.approx(expected, abs=1e-9)
    assert (plots / 'ap_per_class.png').exists() and (plots / 'pr_curves_00.png').exists()


def test_gt_images_missing_from_the_submission_count_unless_submitted_only(ds):
    ids = list(ds.images)[:20]
    ds.write_submission('partial.csv', ids=ids)
    everything = evaluate(ds, 'partial.csv')
    assert everything.images_evaluated == sum(1 for img in ds.images.values() if img.objects or img.image_labels)
    expected = literal_map(ds, images={i: img if i in ids else dataclasses.replace(img, detections=[])
                                       for i, img in ds.images.items()})
    assert everything.mean_ap == pytest.approx(expected, abs=1e-12)
    subset = evaluate(ds, 'partial.csv', submitted_only=True)
    assert subset.images_evaluated == sum(1 for i in ids if ds.images[i].objects or ds.images[i].image_labels)
    assert subset.mean_ap == pytest.approx(literal_map(ds, ids), abs=1e-12)


def test_unknown_label_is_an_error_naming_the_line(ds):
    first = next(iter(ds.predictions))
    rows = {i: [(lab, s, encode_mask(m)) for lab, s, m in p] for i, p in ds.predictions.items()}
    h, w = ds.sizes[first]
    rows[first] = rows[first] + [('/m/notaclass', 0.5, encode_mask(np.ones((h, w), np.uint8)))]
    ds.write_submission('unknown.csv', rows=rows)
    status, out, err = cli(ds, submission='unknown.csv')
    assert status == 1 and not out
    error = [line for line in err.splitlines() if not line.startswith('warning:')]
    assert len(error) == 1 and error[0].startswith('error: ')
    assert 'unknown.csv:2: image' in error[0] and '/m/notaclass' in error[0]
    status, out, err = cli(ds, '--skip-unknown-labels', submission='unknown.csv')
    assert status == 0 and out[-1] == f'mAP@0.5IOU={evaluate(ds).mean_ap:.10f}'
    assert '1 detections with labels outside the class list skipped' in err


def test_mask_of_the_wrong_size_is_an_error(ds):
    rows = {i: [(lab, s, encode_mask(m)) for lab, s, m in p] for i, p in ds.predictions.items()}
    third = list(ds.predictions)[2]
    h, w = ds.sizes[third]
    rows[third] = [('/m/04yx4', 0.5, encode_mask(np.ones((h + 1, w), np.uint8)))]
    ds.write_submission('size.csv', rows=rows)
    status, _, err = cli(ds, submission='size.csv')
    assert status == 1 and 'size.csv:4: image' in err and f'mask is not {h}x{w}' in err


def test_malformed_rows_are_errors(ds):
    sub = ds.path('sub.csv')
    lines = open(sub).read().splitlines()
    bad = lines[:3] + [lines[3].rsplit(',', 1)[0] + ',/m/04yx4 abc xyz'] + lines[4:]
    with open(ds.path('bad.csv'), 'w') as f:
        f.write('\n'.join(bad) + '\n')
    status, _, err = cli(ds, submission='bad.csv')
    assert status == 1 and 'bad.csv:4' in err and "'abc'" in err
    with open(ds.path('dup.csv'), 'w') as f:
        f.write('\n'.join(lines + [lines[1]]) + '\n')
    status, _, err = cli(ds, submission='dup.csv')
    assert status == 1 and f'dup.csv:{len(lines) + 1}' in err and 'appears twice' in err
    masks = open(ds.path('masks.csv')).read().splitlines()
    with open(ds.path('badmasks.csv'), 'w') as f:
        f.write('\n'.join(masks[:2] + [masks[2].replace(',0.81,', ',0.81,x,')] + masks[3:]) + '\n')
    args = ds.args()
    args[1] = ds.path('badmasks.csv')
    status = run(main, args)
    assert status == 1


def test_image_sizes_from_the_image_headers(ds, tmp_path):
    images = tmp_path / 'images'
    images.mkdir()
    for image_id, (h, w) in ds.sizes.items():
        Image.new('RGB', (w, h)).save(images / f'{image_id}.jpg')
    status, out, _ = cli(ds, '--images-dir', str(images))
    assert status == 0 and out[-1] == f'mAP@0.5IOU={evaluate(ds).mean_ap:.10f}'
    first = next(iter(ds.sizes))
    h, w = ds.sizes[first]
    Image.new('RGB', (w + 3, h)).save(images / f'{first}.jpg')
    status, _, err = cli(ds, '--images-dir', str(images))
    assert status == 1 and 'sub.csv:2' in err and f'the image is {w + 3}x{h}' in err


def test_submission_images_outside_the_ground_truth_are_ignored(ds, tmp_path):
    """Rows for images the GT does not have (a whole-validation submission scored on a held-out subset) are
    ignored, as by the official scorer: same mAP, one line saying how many, their image files never read
    (one of them is not even an image)."""
    images = tmp_path / 'images'
    images.mkdir()
    for image_id, (h, w) in ds.sizes.items():
        Image.new('RGB', (w, h)).save(images / f'{image_id}.jpg')
    extra = [f'{k:016x}' for k in range(0xe0, 0xe3)]
    assert not set(extra) & set(ds.sizes)
    (images / f'{extra[1]}.jpg').write_bytes(b'not an image')           # would be an error if it were opened
    sub = tmp_path / 'with-extra.csv'
    ids = list(ds.predictions)
    with SubmissionWriter(str(sub)) as w:
        for k, image_id in enumerate(ids):
            h, wd = ds.sizes[image_id]
            w.write(image_id, wd, h, [(lab, s, encode_mask(m)) for lab, s, m in ds.predictions[image_id]])
            if k < len(extra):
                w.write(extra[k], 7, 5, [('/m/04yx4', 0.9, encode_mask(np.ones((5, 7), np.uint8)))])

    def map_line(submission):
        proc = subprocess.run([sys.executable, '-m', 'util.metric.evaluate', *ds.args(), '--submission',
                               str(submission), '--images-dir', str(images)],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.splitlines()[-1], proc.stderr.splitlines()

    with_extra, err = map_line(sub)
    without, err_without = map_line(ds.path('sub.csv'))
    assert with_extra == without == f'mAP@0.5IOU={evaluate(ds).mean_ap:.10f}'
    no_gt = sum(1 for img in ds.images.values() if not img.objects and not img.image_labels)
    assert no_gt >= 1                                     # the fixture's own images without any GT row
    for lines, n in ((err, no_gt + len(extra)), (err_without, no_gt)):
        said = [line for line in lines if 'not in the ground truth' in line]
        assert len(said) == 1 and said[0].startswith(f'warning: {n} submission images are not in the ground '
                                                     'truth: ignored, as the official scorer ignores them')
    assert f'(first at {sub}:3: image {extra[0]})' in err[[k for k, e in enumerate(err) if 'ground truth' in e][0]]
