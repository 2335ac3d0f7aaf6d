"""Results files: round trip, deterministic bytes, crash and resume, bad input; mask_codec.run_totals."""
import gzip
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from _post_reference import image_detections, rle, run_cli
from util.common.mask_codec import run_totals
from util.post.results_io import ResultsError, ResultsWriter, iter_results, read_classes

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


@pytest.mark.parametrize('suffix', ['.jsonl', '.jsonl.gz'])
@pytest.mark.parametrize('cut', [0, 1, 7, 40, -1])
def test_crash_then_resume_gives_the_same_bytes(tmp_path, suffix, cut):
    rng = np.random.default_rng(0)
    recs = []
    for k in range(6):
        masks = [(rng.random((5, 4)) < 0.5).astype(np.uint8) for _ in range(3)]
        recs.append((f'im{k}', 4, 5, [0, 2, 1], [0.5, 0.25, 1.0], [rle(m) for m in masks]))
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
    if suffix == '.jsonl':                       # tear the last line (or more)
        data = data[:len(data) - cut] if cut >= 0 else data[:len(data) // 2]
    else:                                        # a gzip stream cut short, as after a kill
        data = data[:len(data) - 8 - cut] if cut >= 0 else data[:len(data) // 2]
    open(path + '.partial', 'wb').write(data)
    with ResultsWriter(path, CLASSES, resume=True) as w:
        done = set(w.done_ids)
        assert done <= {r[0] for r in recs[:4]}
        for r in recs:
            if r[0] not in done:
                w.write(*r)
    assert open(path, 'rb').read() == open(ref, 'rb').read()
    # Resuming a finished file adds nothing and changes nothing.
    with ResultsWriter(path, CLASSES, resume=True) as w:
        assert w.done_ids == {r[0] for r in recs}
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
