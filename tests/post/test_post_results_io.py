"""Results files: round trip, deterministic bytes, crash and resume, bad input; mask_codec.run_totals."""
import gzip
import os
import re

import numpy as np
import pytest
from _post_reference import image_detections, rle, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from util.common.mask_codec import run_totals
from util.post.results_io import (
    ResultsError,
    ResultsWriter,
    gzip_damage,
    iter_results,
    read_classes,
)

CLASSES = ['/m/a', '/m/b', '/m/c']


@st.composite
def records(draw, max_images=5):
    out = []
    for k in range(draw(st.integers(0, max_images))):
        h, w, dets = draw(image_detections(CLASSES))
        out.append((f'img{k}', w, h, [CLASSES.index(d[0]) for d in dets], [d[1] for d in dets],
                    [rle(d[2]) for d in dets]))
    return out


def write_all(path, recs, classes=CLASSES):
    with ResultsWriter(path, classes) as w:
        for r in recs:
            w.write(*r)


@pytest.mark.parametrize('suffix', ['.jsonl', '.jsonl.gz'])
@settings(max_examples=15, deadline=None)
@given(recs=records())
def test_round_trip_and_deterministic_bytes(tmp_path_factory, suffix, recs):
    d = tmp_path_factory.mktemp('rt')
    a, b = str(d / f'a{suffix}'), str(d / f'b{suffix}')
    write_all(a, recs)
    write_all(b, recs)
    assert open(a, 'rb').read() == open(b, 'rb').read()
    assert not os.path.exists(a + '.partial')
    assert read_classes(a) == CLASSES
    assert [tuple(r) for r in iter_results(a)] == [tuple(r) for r in recs]


def six_records():
    rng = np.random.default_rng(0)
    recs = []
    for k in range(6):
        masks = [(rng.random((5, 4)) < 0.5).astype(np.uint8) for _ in range(3)]
        recs.append((f'im{k}', 4, 5, [0, 2, 1], [0.5, 0.25, 1.0], [rle(m) for m in masks]))
    return recs


@pytest.mark.parametrize('suffix,partial_kind', [('.jsonl', 'plain'), ('.jsonl.gz', 'plain'),
                                                 ('.jsonl.gz', 'gzip')])
@pytest.mark.parametrize('cut', [0, 1, 7, 40, -1])
def test_crash_then_resume_gives_the_same_bytes(tmp_path, suffix, partial_kind, cut):
    """A partial file torn anywhere resumes to the bytes of an uninterrupted run; 'gzip' is the partial
    of an older writer (one gzip stream, cut short as after a kill)."""
    recs = six_records()
    ref = str(tmp_path / f'ref{suffix}')
    write_all(ref, recs)
    path = str(tmp_path / f'run{suffix}')
    with pytest.raises(RuntimeError):
        with ResultsWriter(path, CLASSES) as w:
            for r in recs[:4]:
                w.write(*r)
            raise RuntimeError('crash')
    assert not os.path.exists(path) and os.path.exists(path + '.partial')
    data = open(path + '.partial', 'rb').read()
    assert data.count(b'\n') == 5                 # the partial file is plain lines: header + 4 images
    if partial_kind == 'plain':                  # tear the last line (or more)
        data = data[:len(data) - cut] if cut >= 0 else data[:len(data) // 2]
    else:
        data = gzip.compress(data, mtime=0)
        data = data[:len(data) - 8 - cut] if cut >= 0 else data[:len(data) // 2]
    open(path + '.partial', 'wb').write(data)
    with ResultsWriter(path, CLASSES, resume=True) as w:
        done = set(w.done_ids)
        assert done <= {r[0] for r in recs[:4]}
        if partial_kind == 'plain' and cut == 0:
            assert done == {r[0] for r in recs[:4]}
        for r in recs:
            if r[0] not in done:
                w.write(*r)
    assert open(path, 'rb').read() == open(ref, 'rb').read()
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(ref), os.path.basename(path)])
    # Resuming a finished file adds nothing and changes nothing.
    with ResultsWriter(path, CLASSES, resume=True) as w:
        assert w.done_ids == {r[0] for r in recs}
    assert open(path, 'rb').read() == open(ref, 'rb').read()


KILLED_WRITER = """
import os, signal, sys, json
from util.post.results_io import ResultsWriter
recs = json.loads(sys.argv[2])
w = ResultsWriter(sys.argv[1], {classes!r})
for r in recs[:int(sys.argv[3])]:
    w.write(*r)
os.kill(os.getpid(), signal.SIGKILL)          # no close, no unwinding, no buffers flushed at exit
"""


@pytest.mark.parametrize('suffix', ['.jsonl', '.jsonl.gz'])
@pytest.mark.parametrize('k', [0, 3])
def test_sigkill_keeps_every_written_image(tmp_path, suffix, k):
    import json
    import signal
    import subprocess
    import sys

    from conftest import REPO
    recs = [list(r) for r in six_records()]
    ref = str(tmp_path / f'ref{suffix}')
    write_all(ref, recs)
    path = str(tmp_path / f'run{suffix}')
    proc = subprocess.run([sys.executable, '-c', KILLED_WRITER.format(classes=CLASSES), path,
                           json.dumps(recs), str(k)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not os.path.exists(path)
    with ResultsWriter(path, CLASSES, resume=True) as w:
        assert w.done_ids == {r[0] for r in recs[:k]}
        for r in recs[k:]:
            w.write(*r)
    assert open(path, 'rb').read() == open(ref, 'rb').read()


def test_writer_rejects_bad_records(tmp_path):
    m = rle(np.ones((3, 2), np.uint8))
    with ResultsWriter(str(tmp_path / 'r.jsonl'), CLASSES) as w:
        with pytest.raises(ResultsError, match='original image size'):
            w.write('a', 3, 2, [0], [0.5], [m])                      # width/height swapped
        with pytest.raises(ResultsError, match='label index'):
            w.write('a', 2, 3, [3], [0.5], [m])
        with pytest.raises(ResultsError, match='non-finite'):
            w.write('a', 2, 3, [0], [float('nan')], [m])
        with pytest.raises(ResultsError, match='1 labels, 2 scores'):
            w.write('a', 2, 3, [0], [0.5, 0.2], [m])
        w.write('a', 2, 3, np.array([1]), np.array([0.5], np.float32), [m])
        with pytest.raises(ResultsError, match='written twice'):
            w.write('a', 2, 3, [], [], [])
    with pytest.raises(ResultsError, match='other classes'):
        ResultsWriter(str(tmp_path / 'r.jsonl'), ['/m/x'], resume=True)
    assert os.path.exists(tmp_path / 'r.jsonl') and not os.path.exists(tmp_path / 'r.jsonl.partial')
    with pytest.raises(ResultsError, match='other classes'):
        open(tmp_path / 'r.jsonl.partial', 'wb').write(open(tmp_path / 'r.jsonl', 'rb').read())
        ResultsWriter(str(tmp_path / 'r.jsonl'), ['/m/x'], resume=True)


def test_reader_names_file_and_line(tmp_path):
    path = str(tmp_path / 'r.jsonl')
    write_all(path, [('a', 1, 1, [], [], []), ('b', 1, 1, [], [], []), ('c', 1, 1, [], [], [])])
    lines = open(path).read().splitlines(True)
    open(path, 'w').write(''.join(lines[:2] + ['{"image_id": "b", oops\n'] + lines[3:]))
    with pytest.raises(ResultsError, match=r'r\.jsonl:3: not a results record'):
        list(iter_results(path))
    open(path, 'w').write(''.join(lines)[:-3])
    with pytest.raises(ResultsError, match=r'r\.jsonl:4: last line is incomplete'):
        list(iter_results(path))
    open(path, 'w').write('{"format": "something else"}\n')
    with pytest.raises(ResultsError, match=r'r\.jsonl:1: not a results file'):
        read_classes(path)
    gz = str(tmp_path / 'r.jsonl.gz')
    write_all(gz, [('a', 1, 1, [], [], [])])
    data = open(gz, 'rb').read()
    open(gz, 'wb').write(data[:-12])
    with pytest.raises(ResultsError, match='truncated'):
        list(iter_results(gz))
    # Resume refuses a corrupt line in the middle instead of silently dropping data.
    open(path + '.partial', 'w').write(''.join(lines[:2] + ['garbage\n'] + lines[3:]))
    with pytest.raises(ResultsError, match=r':3: corrupt line in the middle'):
        ResultsWriter(path, CLASSES, resume=True)


@pytest.mark.parametrize('where', ['magic', 'method', 'flags', 'deflate start', 'deflate middle',
                                   'crc', 'length'])
def test_flipped_byte_in_gzip_is_named_with_its_offset(tmp_path, where):
    path = str(tmp_path / 'r.jsonl.gz')
    write_all(path, six_records() + [(f'x{k}', 4, 5, [1], [0.5], [rle(np.eye(5, 4))]) for k in range(40)])
    data = bytearray(open(path, 'rb').read())
    pos = {'magic': 0, 'method': 2, 'flags': 3, 'deflate start': 10, 'deflate middle': len(data) // 2,
           'crc': len(data) - 6, 'length': len(data) - 2}[where]
    data[pos] ^= 0x04
    open(path, 'wb').write(data)
    with pytest.raises(ResultsError) as e:
        read_classes(path)
        list(iter_results(path))
    m = re.fullmatch(rf'{re.escape(path)}: (?:corrupt|truncated) gzip at byte (\d+) of {len(data)} \(.+\); '
                     'the file is damaged: write it again', str(e.value))
    assert m, str(e.value)
    at = int(m.group(1))
    assert (at >= pos if where != 'magic' else at <= 1) and at <= len(data)
    assert gzip_damage(path)[0] == at
    p = run_cli('-m', 'util.post.results_io', '--no-progress', path)
    assert p.returncode == 1 and p.stderr.strip() == f'error: {e.value}'


def test_gzip_damage_of_sound_and_truncated_files(tmp_path):
    path = str(tmp_path / 'r.jsonl.gz')
    write_all(path, six_records())
    assert gzip_damage(path) is None
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:len(data) // 2])
    assert gzip_damage(path) == (len(data) // 2, 'truncated: the file ends inside the compressed stream')
    with pytest.raises(ResultsError, match=rf'truncated gzip at byte {len(data) // 2} of {len(data) // 2}'):
        list(iter_results(path))


def test_results_cli_summary_and_error(tmp_path):
    path = str(tmp_path / 'r.jsonl.gz')
    write_all(path, [('a', 2, 2, [0, 1], [0.5, 0.25], [rle(np.eye(2))] * 2)])
    p = run_cli('-m', 'util.post.results_io', path)
    assert p.returncode == 0 and '3 classes, 1 images, 2 detections' in p.stdout
    with gzip.open(path, 'wb') as f:
        f.write(b'not json\n')
    p = run_cli('-m', 'util.post.results_io', path)
    assert p.returncode == 1 and p.stderr.strip().count('\n') == 0 and 'r.jsonl.gz:1' in p.stderr


# ---- mask_codec.run_totals against a plain port of pycocotools' string parser -----------------------
def slow_totals(counts: bytes):
    cnts, p = [], 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            if p >= len(counts):
                return -1
            c = counts[p] - 48
            if not 0 <= c <= 63 or k > 11:
                return -1
            x |= (c & 0x1f) << 5 * k
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << 5 * k
        if len(cnts) > 2:
            x += cnts[-2]
        cnts.append(x)
    if any(v < 0 or v > 0xFFFFFFFF for v in cnts):
        return -1
    return sum(cnts)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=12),
                          st.text(alphabet=[chr(c) for c in range(48, 112)], max_size=12).map(str.encode)),
                max_size=6))
def test_run_totals_matches_a_plain_parser(strings):
    assert list(run_totals(strings)) == [slow_totals(s) for s in strings]


def test_run_totals_of_real_masks():
    rng = np.random.default_rng(1)
    ms = [np.zeros((768, 1024), np.uint8), np.ones((300, 500), np.uint8)]
    for _ in range(6):
        m = np.zeros((768, 1024), np.uint8)
        y, x = rng.integers(0, 700), rng.integers(0, 900)
        m[y:y + rng.integers(1, 400), x:x + rng.integers(1, 600)] = 1
        ms.append(m | (rng.random(m.shape) < 0.01))
    counts = [rle(m)['counts'].encode() for m in ms]
    assert list(run_totals(counts)) == [m.size for m in ms]
    assert list(run_totals(counts)) == [slow_totals(c) for c in counts]


@pytest.mark.parametrize('field,value,message', [
    ('labels', 5, 'labels, scores and counts must be lists'),
    ('labels', {'0': 1}, 'labels, scores and counts must be lists'),
    ('labels', [True], 'label index outside 0..2'),
    ('scores', [True], 'a score is not a finite number'),
    ('counts', [[0, 4]], "a mask's counts is not a string"),
    ('width', 0, 'size 0x2, expected positive integers'),
])
def test_reader_rejects_records_of_the_wrong_types(tmp_path, field, value, message):
    import json
    path = str(tmp_path / 'r.jsonl')
    write_all(path, [('a', 2, 2, [0], [0.5], [rle(np.eye(2))])])
    header, line = open(path).read().splitlines()
    record = dict(json.loads(line), **{field: value})
    open(path, 'w').write(f'{header}\n{json.dumps(record)}\n')
    with pytest.raises(ResultsError, match=re.escape(f'{path}:2: image a: {message}')):
        list(iter_results(path))
