"""The bad-input battery (issue 12): every broken input, given to every command that reads it, as a user would.

Each case is a small valid file with one fault. Every command that reads the faulty part runs as a real
subprocess under a timeout (a hang fails the test) and must: exit non-zero, print one line on stderr that
names the file and the line (or image), print no traceback, and leave nothing at its output path. The
valid files themselves pass every command (the control), so a failure always points at the fault.

Masks are built here from explicit run lengths with pycocotools (not with util's codec), so a fault such as
"the last background run is missing" is exactly that.
"""
import base64
import gzip
import json
import os
import subprocess
import sys
import zlib

import pytest
from conftest import REPO
from pycocotools import mask as mask_utils

PY = sys.executable
TIMEOUT = 60
TEDDY, TOY = '/m/0kmg4', '/m/0138tl'          # Teddy bear and its parent Toy (both in the hierarchy)


def counts_of(runs, h=4, w=4) -> bytes:
    """Compressed COCO counts of explicit (column-major) runs, whatever they add up to."""
    return mask_utils.frPyObjects({'size': [h, w], 'counts': list(runs)}, h, w)['counts']


def encoded(counts: bytes) -> str:
    return base64.b64encode(zlib.compress(counts, 9)).decode()


A = [0, 2, 2, 2, 2, 8]                       # 4x4: rows 0-1 of columns 0-1
B = [0, 3, 1, 3, 9]                          # 4x4: rows 0-2 of columns 0-1 (IoU 2/3 with A)
ENC_A, ENC_B = encoded(counts_of(A)), encoded(counts_of(B))
SHORT_B = encoded(counts_of(B[:-1]))         # the final background run dropped: 7 of 16 pixels
LONG_B = encoded(counts_of(B[:-1] + [10]))  # 17 of 16 pixels

HEADER = 'ImageID,ImageWidth,ImageHeight,PredictionString'
GOOD = [HEADER,
        f'img0,4,4,{TEDDY} 0.9 {ENC_A} {TEDDY} 0.8 {ENC_B}',      # line 2: two overlapping Teddy bears
        f'img1,4,4,{TOY} 0.5 {ENC_A} {TEDDY} 0.25 {ENC_B}',       # line 3
        'img2,4,4,']                                              # line 4: no detections
EMPTY = [HEADER, 'img0,4,4,', 'img1,4,4,', 'img2,4,4,']


def text(lines) -> bytes:
    return ('\n'.join(lines) + '\n').encode()


def replace(line_no, old, new):
    def mutate(lines):
        lines = list(lines)
        assert old in lines[line_no - 1]
        lines[line_no - 1] = lines[line_no - 1].replace(old, new, 1)
        return text(lines)
    return mutate


# ---- the commands ----------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def gt(tmp_path_factory):
    """Ground truth for evaluate: one image of the evaluator's small raw-file dataset (not in GOOD)."""
    from _eval_files import write_dataset
    return write_dataset(str(tmp_path_factory.mktemp('gt')), n_images=1, seed=0)


def commands(gt, sub, empty, out):
    """Every command that reads a submission: name -> argv (``out`` is the output path, if any)."""
    return {
        'validate': ['-m', 'util.post.validate', sub, '--no-progress'],
        'evaluate': ['-m', 'util.metric.evaluate', *gt.args()[:-2], '--submission', sub],
        'mask_nms': ['-m', 'util.post.mask_nms', sub, '-o', out, '--no-progress'],
        'mask_nms_vote': ['-m', 'util.post.mask_nms', sub, sub, '-o', out, '--vote', '--no-progress'],
        'expand': ['-m', 'util.post.expand', sub, '-o', out],
        'combine': ['-m', 'util.post.combine', sub, empty, '-o', out],
        'combine_nms': ['combine_leaf_and_parent.py', '--leaf', empty, '--parent', sub, sub, '-o', out,
                        '--iou-thr', '0.5'],
        'fuse': ['-m', 'util.post.fuse', empty, sub, '-o', out, '--no-progress', '--jobs', '2'],
        'fuse_vote': ['-m', 'util.post.fuse', empty, sub, '-o', out, '--method', 'vote', '--no-progress'],
    }


READERS = ['validate', 'evaluate', 'mask_nms', 'mask_nms_vote', 'expand', 'combine', 'combine_nms', 'fuse',
           'fuse_vote']
DECODERS = ['validate', 'evaluate', 'mask_nms', 'mask_nms_vote', 'combine_nms', 'fuse',
            'fuse_vote']   # the ones that read masks


def run(argv, timeout=TIMEOUT):
    try:
        return subprocess.run([PY, *argv], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, PYTHONWARNINGS='ignore'))
    except subprocess.TimeoutExpired:
        pytest.fail(f'{argv} did not finish in {timeout} s (hang)')


def assert_one_line_error(proc, name, path, where, out=None):
    """Non-zero exit, one stderr line naming ``path`` and ``where``, no traceback, no output file."""
    assert proc.returncode not in (0, None), f'{name} exited 0 on bad input\n{proc.stdout[-800:]}'
    err = proc.stderr.strip().splitlines()
    assert 'Traceback' not in proc.stderr, f'{name}: traceback\n{proc.stderr[-2000:]}'
    assert len(err) == 1, f'{name}: {len(err)} stderr lines\n{proc.stderr[-2000:]}'
    # validate lists every problem on stdout and gives its verdict on stderr.
    detail = proc.stdout + err[0] if name == 'validate' else err[0]
    assert path in err[0], f'{name}: {path} not named in {err[0]!r}'
    assert where in detail, f'{name}: {where!r} not in {detail[-800:]!r}'
    if out is not None:
        assert not os.path.exists(out) and not os.path.exists(out + '.tmp'), f'{name} left {out}'


# ---- submission faults -----------------------------------------------------------------------------------
# (id, the faulty file's bytes, what the error must name besides the file, the commands that must refuse it)
SUBMISSION_CASES = [
    ('double-quote', replace(3, 'img1', 'img"1'), ':3:', READERS),
    ('unbalanced-quote-swallowing-rows', replace(2, f'{TEDDY} 0.9', f'"{TEDDY} 0.9'), ':2:', READERS),
    ('nan-confidence', replace(3, '0.5', 'nan'), ':3: image img1', READERS),
    ('inf-confidence', replace(3, '0.5', 'inf'), ':3: image img1', READERS),
    ('negative-confidence', replace(3, '0.5', '-0.5'), ':3: image img1', READERS),
    ('confidence-over-1', replace(3, '0.5', '1.5'), ':3: image img1', READERS),
    ('duplicate-image', lambda lines: text(lines[:3] + [lines[1].replace('img0', 'img1')] + lines[3:]),
     ':4: image img1', READERS),
    ('zero-width', replace(3, 'img1,4,4', 'img1,0,4'), ':3: image img1', READERS),
    ('negative-height', replace(3, 'img1,4,4', 'img1,4,-4'), ':3: image img1', READERS),
    ('three-columns', replace(3, 'img1,4,4,', 'img1,4,'), ':3:', READERS),
    ('latin-1-bytes', lambda lines: text(lines).replace(b'img1', b'img\xe91'), ':3:', READERS),
    ('gzip-named-csv', lambda lines: gzip.compress(text(lines), mtime=0), 'is it compressed?', READERS),
    ('runs-too-short-hang', replace(2, ENC_B, SHORT_B), ':2: image img0: detection 2', DECODERS),
    ('runs-too-long', replace(2, ENC_B, LONG_B), ':2: image img0: detection 2', DECODERS),
    ('base64-outside-alphabet', replace(3, ENC_A, ENC_A[:4] + '!' + ENC_A[4:]), ':3: image img1: detection 1',
     DECODERS),
    ('truncated-zlib', replace(3, ENC_A, ENC_A[:8]), ':3: image img1: detection 1', DECODERS),
    ('not-a-triple', replace(3, f'{TOY} 0.5 ', f'{TOY} '), ':3: image img1', READERS),
]

def submission_params():
    for case, mutate, where, names in SUBMISSION_CASES:
        for name in names:
            yield pytest.param(case, mutate, where, name, id=f'{case}-{name}')


@pytest.mark.parametrize('case,mutate,where,name', list(submission_params()))
def test_bad_submission(gt, tmp_path, case, mutate, where, name):
    sub, empty, out = str(tmp_path / 'sub.csv'), str(tmp_path / 'empty.csv'), str(tmp_path / 'out.csv')
    with open(sub, 'wb') as f:
        f.write(mutate(GOOD))
    with open(empty, 'wb') as f:
        f.write(text(EMPTY))
    argv = commands(gt, sub, empty, out)[name]
    proc = run(argv)
    assert_one_line_error(proc, name, sub, where, out if '-o' in argv else None)


@pytest.mark.parametrize('name', READERS)
def test_the_valid_files_pass_every_command(gt, tmp_path, name):
    sub, empty, out = str(tmp_path / 'sub.csv'), str(tmp_path / 'empty.csv'), str(tmp_path / 'out.csv')
    (tmp_path / 'sub.csv').write_bytes(text(GOOD))
    (tmp_path / 'empty.csv').write_bytes(text(EMPTY))
    argv = commands(gt, sub, empty, out)[name]
    proc = run(argv)
    assert proc.returncode == 0, proc.stderr
    if '-o' in argv:
        assert os.path.exists(out)


@pytest.mark.parametrize('name', ['validate', 'mask_nms', 'expand'])
def test_a_byte_order_mark_is_accepted(gt, tmp_path, name):
    """Excel writes one; the output is the same as without it."""
    outs = []
    for k, data in enumerate([text(GOOD), b'\xef\xbb\xbf' + text(GOOD)]):
        sub, out = str(tmp_path / f'sub{k}.csv'), str(tmp_path / f'out{k}.csv')
        (tmp_path / f'sub{k}.csv').write_bytes(data)
        proc = run(commands(gt, sub, sub, out)[name])
        assert proc.returncode == 0, proc.stderr
        outs.append(open(out, 'rb').read() if os.path.exists(out) else proc.stdout.replace(f'sub{k}', ''))
    assert outs[0] == outs[1]


def test_a_bom_in_an_id_list_gives_no_missing_images(tmp_path):
    (tmp_path / 'sub.csv').write_bytes(text(GOOD))
    for name, data in [('ids.txt', '\ufeffimg0\nimg1\nimg2\n'), ('sample.csv', '\ufeffImageID,ImageWidth,'
                                                                   'ImageHeight\nimg0,4,4\nimg1,4,4\nimg2,4,4\n')]:
        (tmp_path / name).write_text(data, encoding='utf-8')
        proc = run(['-m', 'util.post.validate', str(tmp_path / 'sub.csv'), '--ids', str(tmp_path / name)])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert 'missing' not in proc.stdout and 'images: 3 of 3 expected' in proc.stdout


@pytest.mark.parametrize('fault', ['gzip', 'latin-1'])
def test_a_compressed_or_latin1_id_list_is_one_line(tmp_path, fault):
    (tmp_path / 'sub.csv').write_bytes(text(GOOD))
    ids = 'img0\nimg1\nimg2\n'.encode()
    data = gzip.compress(ids, mtime=0) if fault == 'gzip' else ids.replace(b'img1', b'img\xe91')
    (tmp_path / 'ids.csv').write_bytes(data)
    where = 'is it compressed?' if fault == 'gzip' else 'ids.csv:2:'
    proc = run(['-m', 'util.post.validate', str(tmp_path / 'sub.csv'), '--ids', str(tmp_path / 'ids.csv')])
    assert_one_line_error(proc, 'validate-ids', str(tmp_path / 'ids.csv'), where)
    out = str(tmp_path / 'out.csv')
    results = tmp_path / 'r.jsonl'
    results.write_text(json.dumps({'format': 'oid-results', 'version': 1, 'classes': [TEDDY]}) + '\n')
    proc = run(['-m', 'util.post.to_submission', str(results), '--ids', str(tmp_path / 'ids.csv'), '-o', out,
                '--no-progress'])
    assert_one_line_error(proc, 'to_submission-ids', str(tmp_path / 'ids.csv'), where, out)


def test_a_last_line_without_newline_is_a_warning(tmp_path):
    sub = tmp_path / 'sub.csv'
    sub.write_bytes(text(GOOD)[:-1])
    proc = run(['-m', 'util.post.validate', str(sub)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'warning' in proc.stderr and 'no newline' in proc.stderr and str(sub) in proc.stderr
    sub.write_bytes(text(GOOD))
    assert 'warning' not in run(['-m', 'util.post.validate', str(sub)]).stderr


def test_the_hang_reproduction_stops_at_once(tmp_path):
    """pycocotools' iou on runs adding up to 7 of 16 pixels never returns; the check comes first."""
    sub = tmp_path / 'sub.csv'
    sub.write_bytes(text([HEADER, f'img0,4,4,{TEDDY} 0.9 {ENC_A} {TEDDY} 0.8 {SHORT_B}']))
    out = str(tmp_path / 'out.csv')
    proc = run(['-m', 'util.post.mask_nms', str(sub), '-o', out, '--no-progress'], timeout=20)
    assert_one_line_error(proc, 'mask_nms', str(sub), ':2: image img0: detection 2: mask is not 4x4', out)


# ---- results-file faults (util.post.to_submission) -------------------------------------------------------
def results_lines():
    a, b = counts_of(A).decode(), counts_of(B).decode()
    return [{'format': 'oid-results', 'version': 1, 'classes': [TEDDY, TOY]},
            {'image_id': 'img0', 'width': 4, 'height': 4, 'labels': [0, 1], 'scores': [0.9, 0.8],
             'counts': [a, b]},
            {'image_id': 'img1', 'width': 4, 'height': 4, 'labels': [1], 'scores': [0.5], 'counts': [a]}]


def record_fault(**changes):
    def mutate(lines):
        lines[2] = dict(lines[2], **changes)
        return lines
    return mutate


RESULTS_CASES = [
    ('garbage-counts', record_fault(counts=['@@!!~~'])),
    ('truncated-counts', record_fault(counts=[counts_of(B[:-1]).decode()])),
    ('too-long-counts', record_fault(counts=[counts_of(B[:-1] + [10]).decode()])),
    ('labels-not-a-list', record_fault(labels={'0': 1})),
    ('counts-not-strings', record_fault(counts=[[0, 16]])),
    ('counts-not-ascii', record_fault(counts=['\u00e9\u00e9'])),
    ('score-over-1', record_fault(scores=[1.5])),
    ('negative-score', record_fault(scores=[-0.1])),
    ('score-true', record_fault(scores=[True])),
    ('zero-width', record_fault(width=0)),
    ('negative-width', record_fault(width=-4)),
    ('duplicate-image', record_fault(image_id='img0')),
    ('labels-an-integer', record_fault(labels=5)),
]


@pytest.mark.parametrize('case,mutate', [pytest.param(c, m, id=c) for c, m in RESULTS_CASES])
def test_bad_results_file(tmp_path, case, mutate):
    results, out = str(tmp_path / 'r.jsonl'), str(tmp_path / 'sub.csv')
    with open(results, 'w') as f:
        f.writelines(json.dumps(d) + '\n' for d in mutate(results_lines()))
    proc = run(['-m', 'util.post.to_submission', results, '-o', out, '--no-progress'])
    assert_one_line_error(proc, 'to_submission', results, ':3: image img', out)


def test_the_valid_results_file_converts(tmp_path):
    results, out = str(tmp_path / 'r.jsonl'), str(tmp_path / 'sub.csv')
    with open(results, 'w') as f:
        f.writelines(json.dumps(d) + '\n' for d in results_lines())
    proc = run(['-m', 'util.post.to_submission', results, '-o', out, '--no-progress'])
    assert proc.returncode == 0, proc.stderr
    rows = open(out).read().splitlines()
    assert rows[1] == f'img0,4,4,{TEDDY} 0.9 {ENC_A} {TOY} 0.8 {ENC_B}'
