"""Fuzz: random byte-level corruptions of a small valid submission, fed to every command that reads one.

A corruption is 1-3 of: flip a bit, delete 1-4 bytes, insert 1-4 bytes, truncate. Each command runs as a
real subprocess under a timeout, and must:
- never hang, never print a traceback; when it refuses, one error line (warnings aside) naming the file;
- validate and evaluate agree: evaluate scores a file exactly when validate accepts it;
- mask_nms, when it exits 0, writes only masks of its input that decode strictly at their row's size;
  and if its masks differ from what it writes for the uncorrupted file, validate accepts the corrupted one
  (the corruption made another valid submission, e.g. a cut at a row boundary);
- expand and combine (which pass masks through as text) write exactly the mask strings of their input,
  and exit 0 only if every problem validate finds is in what they do not read (mask contents, labels for
  combine).
"""
import os
import subprocess
import sys

import pytest
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from util.common.errors import DataError
from util.common.mask_codec import decode_encoded_batch
from util.common.submission import iter_submission

PY = sys.executable
TIMEOUT = 60


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """The evaluator's small raw-file dataset (2 images): its GT, a valid submission of it, an empty
    submission of the same images (combine's second input) and every command's output on the valid one."""
    from _eval_files import write_dataset
    ds = write_dataset(str(tmp_path_factory.mktemp('fuzz-gt')), n_images=2, seed=3)
    with open(ds.path('sub.csv'), 'rb') as f:
        original = f.read()
    empty = ds.path('empty.csv')
    empty_like(empty, ds.path('sub.csv'))
    os.makedirs(ds.path('want'))
    want, want_outs = run_all(ds, ds.path('sub.csv'), empty, ds.path('want'))
    assert all(rc == 0 for rc, _, _ in want.values()), want
    return ds, original, empty, masks_by_image(want_outs['mask_nms'])


corruption = st.one_of(
    st.tuples(st.just('flip'), st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
    st.tuples(st.just('delete'), st.floats(0, 1, exclude_max=True), st.integers(1, 4)),
    st.tuples(st.just('insert'), st.floats(0, 1), st.binary(min_size=1, max_size=4)),
    st.tuples(st.just('truncate'), st.floats(0, 1), st.none()))


def corrupt(data: bytes, ops) -> bytes:
    for op, where, arg in ops:
        i = int(where * len(data))
        if op == 'flip' and data:
            data = data[:i] + bytes([data[i] ^ (1 << arg)]) + data[i + 1:]
        elif op == 'delete':
            data = data[:i] + data[i + arg:]
        elif op == 'insert':
            data = data[:i] + arg + data[i:]
        elif op == 'truncate':
            data = data[:i]
    return data


def masks_by_image(path):
    """image id -> the sorted EncodedMask strings of its row (the strict reader)."""
    return {r.image_id: sorted(d[2] for d in r.detections) for r in iter_submission(path)}


def decodes(path) -> bool:
    try:
        for r in iter_submission(path):
            decode_encoded_batch([d[2] for d in r.detections], r.height, r.width)
    except DataError:
        return False
    return True


def run_all(ds, sub, empty, out_dir):
    outs = {name: os.path.join(out_dir, f'{name}.csv') for name in ('mask_nms', 'expand', 'combine')}
    argv = {
        'validate': ['-m', 'util.post.validate', sub, '--no-progress'],
        'evaluate': ['-m', 'util.metric.evaluate', *ds.args()[:-2], '--submission', sub],
        'mask_nms': ['-m', 'util.post.mask_nms', sub, '-o', outs['mask_nms'], '--no-progress'],
        'expand': ['-m', 'util.post.expand', sub, '-o', outs['expand']],
        'combine': ['-m', 'util.post.combine', sub, empty, '-o', outs['combine']],
    }
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    procs = {k: subprocess.Popen([PY, *a], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=env) for k, a in argv.items()}
    results = {}
    for name, p in procs.items():
        try:
            out, err = p.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for q in procs.values():
                q.kill()
            pytest.fail(f'{name} did not finish in {TIMEOUT} s on {sub} (hang)')
        results[name] = (p.returncode, out, err)
    return results, outs


def empty_like(path, sub):
    """A submission with the same images and sizes as ``sub`` and no detections (combine's second input)."""
    with open(path, 'w') as f:
        f.write('ImageID,ImageWidth,ImageHeight,PredictionString\n')
        for r in iter_submission(sub, parse=False):
            f.write(f'{r.image_id},{r.width},{r.height},\n')


MASK_PROBLEMS = ('EncodedMask', 'mask is not', 'malformed counts')


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(corruption, min_size=1, max_size=3))
def test_corrupted_submissions(files, tmp_path_factory, ops):
    ds, original, empty, want_nms = files
    d = str(tmp_path_factory.mktemp('fuzz'))
    sub = os.path.join(d, 'sub.csv')
    with open(sub, 'wb') as f:
        f.write(corrupt(original, ops))
    got, outs = run_all(ds, sub, empty, d)

    for name, (rc, out, err) in got.items():
        assert 'Traceback' not in err, f'{name} on {ops}:\n{err[-3000:]}'
        if rc != 0:
            lines = [line for line in err.strip().splitlines() if not line.startswith('warning:')]
            assert len(lines) == 1 and lines[0].startswith('error:') and sub in lines[0], (name, ops, err)
            if name in outs:
                assert not os.path.exists(outs[name]), (name, ops)
    valid = got['validate'][0] == 0
    assert (got['evaluate'][0] == 0) == valid, (ops, got['validate'], got['evaluate'])
    problems = [line for line in got['validate'][1].splitlines() if line.startswith(sub)]

    if got['mask_nms'][0] == 0:
        assert decodes(outs['mask_nms']), ops
        mine, theirs = masks_by_image(outs['mask_nms']), masks_by_image(sub)
        assert all(set(m) <= set(theirs[i]) for i, m in mine.items()), ops
        if mine != want_nms:
            assert valid, (ops, problems)
    for name, allowed in (('expand', MASK_PROBLEMS), ('combine', MASK_PROBLEMS + ('class list',))):
        if got[name][0] != 0:
            continue
        mine, theirs = masks_by_image(outs[name]), masks_by_image(sub)
        assert {i: sorted(set(m)) for i, m in mine.items()} == {i: sorted(set(m)) for i, m in theirs.items()} \
            or name == 'expand', (name, ops)             # expand may drop labels outside the hierarchy: none here
        if name == 'expand':
            assert all(set(m) == set(theirs[i]) for i, m in mine.items()), ops
        assert all(any(a in p for a in allowed) for p in problems), (name, ops, problems)
