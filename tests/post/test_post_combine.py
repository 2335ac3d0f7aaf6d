"""Combining submissions with disjoint classes, the per-image cap, and combine_leaf_and_parent.py."""
import os

import numpy as np
import pytest
from _post_reference import (
    image_detections,
    read_csv,
    run_cli,
    same_dets,
    slow_cap,
    slow_nms,
    write_csv,
)
from conftest import REPO
from hypothesis import given, settings
from hypothesis import strategies as st

from util.common.submission import (
    SHORTEST,
    format_prediction_string,
    parse_prediction_string,
)
from util.post.combine import (
    cap_detections,
    combine_leaf_and_parent,
    combine_submissions,
)

LEAF, PARENT = ['/m/l1', '/m/l2'], ['/m/p1', '/m/p2']


def rounded(dets):
    return [(lab, float(f'{s:.6g}'), m) for lab, s, m in dets]


@settings(max_examples=40, deadline=None)
@given(scores=st.lists(st.sampled_from([0.1, 0.5, 0.5, 0.9, 1.0]), max_size=10),
       max_dets=st.one_of(st.none(), st.integers(0, 8)))
def test_cap_keeps_the_best_in_their_order(scores, max_dets):
    dets = [(f'/m/{i}', s, str(i)) for i, s in enumerate(scores)]
    assert cap_detections(dets, max_dets) == slow_cap(dets, max_dets)


@settings(max_examples=15, deadline=None)
@given(images=st.lists(st.tuples(image_detections(LEAF, max_dets=4, h=3, w=4),
                                 image_detections(PARENT, max_dets=4, h=3, w=4)), max_size=3),
       max_dets=st.sampled_from([None, 3]))
def test_integrate_matches_concatenation(tmp_path_factory, images, max_dets):
    d = tmp_path_factory.mktemp('int')
    write_csv(str(d / 'a.csv'), [(f'i{k}', 4, 3, a[2]) for k, (a, _) in enumerate(images)])
    write_csv(str(d / 'b.csv'), [(f'i{k}', 4, 3, b[2]) for k, (_, b) in enumerate(images)])
    combine_submissions([str(d / 'a.csv'), str(d / 'b.csv')], str(d / 'out.csv'), max_dets)
    rows = read_csv(str(d / 'out.csv'))
    assert [r[0] for r in rows] == [f'i{k}' for k in range(len(images))]
    for row, (a, b) in zip(rows, images):
        assert same_dets(row[3], slow_cap(rounded(a[2] + b[2]), max_dets), 3, 4)


def test_overlapping_classes_are_refused(tmp_path):
    m = np.ones((2, 2), np.uint8)
    write_csv(str(tmp_path / 'a.csv'), [('x', 2, 2, [('/m/l1', 0.5, m)]), ('y', 2, 2, [])])
    write_csv(str(tmp_path / 'b.csv'), [('x', 2, 2, []), ('y', 2, 2, [('/m/l1', 0.5, m)])])
    args = ['-m', 'util.post.combine', str(tmp_path / 'a.csv'), str(tmp_path / 'b.csv'),
            '-o', str(tmp_path / 'o.csv')]
    p = run_cli(*args)
    assert p.returncode != 0 and 'b.csv:3: image y: label /m/l1 also comes from' in p.stderr
    assert not os.path.exists(tmp_path / 'o.csv')
    assert run_cli(*args, '--allow-overlap').returncode == 0


def test_combine_leaf_and_parent_script(tmp_path):
    rng = np.random.default_rng(3)

    def dets(labels, n):
        out = []
        for _ in range(n):
            m = np.zeros((6, 5), np.uint8)
            m[rng.integers(0, 3):rng.integers(3, 6), rng.integers(0, 2):rng.integers(2, 5)] = 1
            out.append((labels[rng.integers(len(labels))], float(rng.integers(1, 10)) / 10, m))
        return out

    images = [(f'i{k}', dets(LEAF, 3), dets(PARENT, 4), dets(PARENT, 4)) for k in range(4)]
    for name, col in [('leaf', 1), ('p1', 2), ('p2', 3)]:
        write_csv(str(tmp_path / f'{name}.csv'), [(im[0], 5, 6, im[col]) for im in images])
    script = os.path.join(REPO, 'combine_leaf_and_parent.py')
    # Parents merged in the same pass, with a cap.
    p = run_cli(script, '--leaf', str(tmp_path / 'leaf.csv'), '--parent', str(tmp_path / 'p1.csv'),
                str(tmp_path / 'p2.csv'), '--iou-thr', '0.5', '--vote', '--max-dets', '6', '--no-progress',
                '-o', str(tmp_path / 'out.csv'))
    assert p.returncode == 0, p.stderr
    for row, (_, leaf, p1, p2) in zip(read_csv(str(tmp_path / 'out.csv')), images):
        want = slow_cap(rounded(leaf) + slow_nms(rounded(p1 + p2), 6, 5, 0.5, True), 6)
        assert same_dets(row[3], want, 6, 5)
    # Without --iou-thr the parent input is taken as merged; two parent inputs then overlap.
    p = run_cli(script, '--leaf', str(tmp_path / 'leaf.csv'), '--parent', str(tmp_path / 'p1.csv'),
                '-o', str(tmp_path / 'plain.csv'))
    assert p.returncode == 0, p.stderr
    for row, (_, leaf, p1, _) in zip(read_csv(str(tmp_path / 'plain.csv')), images):
        assert same_dets(row[3], rounded(leaf + p1), 6, 5)
    p = run_cli(script, '--leaf', str(tmp_path / 'leaf.csv'), '--parent', str(tmp_path / 'p1.csv'),
                str(tmp_path / 'p2.csv'), '-o', str(tmp_path / 'bad.csv'))
    assert p.returncode != 0 and 'disjoint classes' in p.stderr and not os.path.exists(tmp_path / 'bad.csv')


@settings(max_examples=20, deadline=None)
@given(images=st.lists(st.tuples(image_detections(LEAF, max_dets=5, h=3, w=4),
                                 image_detections(PARENT, max_dets=5, h=3, w=4)), max_size=4),
       max_dets=st.sampled_from([None, 0, 3, 6]))
def test_rows_copied_as_text_are_the_parsed_rows_rewritten(tmp_path_factory, images, max_dets):
    """Images that need no change are copied as text; the bytes are those of parsing every triple and
    writing it back (what the step did before), for capped and uncapped images alike."""
    d = tmp_path_factory.mktemp('copy')
    write_csv(str(d / 'a.csv'), [(f'i{k}', 4, 3, a[2]) for k, (a, _) in enumerate(images)])
    write_csv(str(d / 'b.csv'), [(f'i{k}', 4, 3, b[2]) for k, (_, b) in enumerate(images)])
    combine_leaf_and_parent(str(d / 'a.csv'), [str(d / 'b.csv')], str(d / 'out.csv'), max_dets=max_dets)
    want = ['ImageID,ImageWidth,ImageHeight,PredictionString']
    for (ra, rb) in zip(read_csv(str(d / 'a.csv')), read_csv(str(d / 'b.csv'))):
        dets = cap_detections(parse_prediction_string(ra[3]) + parse_prediction_string(rb[3]), max_dets)
        want.append(f'{ra[0]},4,3,{format_prediction_string(dets, SHORTEST)}')
    assert (d / 'out.csv').read_text() == '\n'.join(want) + '\n'


@pytest.mark.parametrize('text, message', [
    ('/m/l1 nan eJwzBAAAMgAy', "leaf.csv:3: image y: detection 1: confidence 'nan' is not a number in [0, 1]"),
    ('/m/l1 0.5 eJwzBAAAMgAy /m/l1 1.5 eJwzBAAAMgAy', 'leaf.csv:3: image y: detection 2: confidence'),
    ('/m/l1 0.5', 'leaf.csv:3: image y: PredictionString has 2 fields, not a multiple of 3'),
])
def test_copied_rows_are_still_checked(tmp_path, text, message):
    (tmp_path / 'leaf.csv').write_text('ImageID,ImageWidth,ImageHeight,PredictionString\nx,2,2,\n'
                                       f'y,2,2,{text}\n')
    write_csv(str(tmp_path / 'p.csv'), [('x', 2, 2, []), ('y', 2, 2, [])])
    p = run_cli(os.path.join(REPO, 'combine_leaf_and_parent.py'), '--leaf', str(tmp_path / 'leaf.csv'),
                '--parent', str(tmp_path / 'p.csv'), '-o', str(tmp_path / 'o.csv'), '--no-progress')
    assert p.returncode == 1 and message in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / 'o.csv') and not os.path.exists(tmp_path / 'o.csv.tmp')


def test_nms_errors_name_the_parent_file_and_line(tmp_path):
    m = np.ones((2, 2), np.uint8)
    write_csv(str(tmp_path / 'leaf.csv'), [('x', 2, 2, []), ('y', 2, 2, [])])
    write_csv(str(tmp_path / 'p1.csv'), [('x', 2, 2, []), ('y', 2, 2, [('/m/p1', 0.5, m)])])
    write_csv(str(tmp_path / 'p2.csv'), [('x', 2, 2, []), ('y', 2, 2, [('/m/p1', 0.4, m), ('/m/p1', 0.3, '@@@@')])])
    p = run_cli(os.path.join(REPO, 'combine_leaf_and_parent.py'), '--leaf', str(tmp_path / 'leaf.csv'),
                '--parent', str(tmp_path / 'p1.csv'), str(tmp_path / 'p2.csv'), '--iou-thr', '0.5',
                '-o', str(tmp_path / 'o.csv'), '--no-progress')
    assert p.returncode == 1 and f'{tmp_path / "p2.csv"}:3: image y: detection 2' in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not os.path.exists(tmp_path / 'o.csv')
