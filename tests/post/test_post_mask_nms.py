"""Mask NMS (and voting) on RLEs against greedy NMS on dense masks; lock-step reading; the CLI."""
import base64
import os
import zlib

import numpy as np
import pytest
from _post_reference import (
    encode,
    image_detections,
    read_csv,
    run_cli,
    same_dets,
    slow_nms,
    write_csv,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from util.common.errors import DataError
from util.post.mask_nms import mask_nms_submissions, nms_detections

LABELS = ['/m/a', '/m/b']


def encoded(dets):
    return [(lab, float(f'{s:.6g}'), encode(m)) for lab, s, m in dets]


@settings(max_examples=60, deadline=None)
@given(image=image_detections(LABELS, max_dets=9), thr=st.sampled_from([0.5, 0.3, 0.8]), vote=st.booleans())
def test_matches_dense_greedy_nms(image, thr, vote):
    h, w, dets = image
    got, _ = nms_detections(encoded(dets), h, w, thr, vote)
    want = slow_nms(dets, h, w, thr, vote)
    assert [(g[0], g[1]) for g in got] == [(x[0], x[1]) for x in want]
    for g, x in zip(got, want):
        assert g[2] == encode(x[2])                # same canonical RLE, so the same string


def test_voting_replaces_the_anchor_mask_only_for_big_clusters():
    h, w = 4, 6
    base = np.zeros((h, w), np.uint8)
    base[:, :4] = 1
    a, b, c = base.copy(), base.copy(), base.copy()
    b[:, 4] = 1                                     # IoU 0.8 with a
    c[:, 4] = 1
    c[0, 3] = 0
    dets = [('/m/a', 0.6, a), ('/m/a', 0.5, b), ('/m/a', 0.4, c)]
    got, voted = nms_detections(encoded(dets), h, w, 0.5, vote=True)
    assert voted == 1 and len(got) == 1
    mean = (0.6 * a + 0.5 * b + 0.4 * c) / 1.5 > 0.5
    assert got[0][2] == encode(mean) != encode(a)
    # Two suppressed masks whose scores do not exceed the anchor's: no vote.
    dets = [('/m/a', 0.95, a), ('/m/a', 0.5, b), ('/m/a', 0.4, c)]
    got, voted = nms_detections(encoded(dets), h, w, 0.5, vote=True)
    assert voted == 0 and got[0][2] == encode(a)


@settings(max_examples=15, deadline=None)
@given(images=st.lists(st.tuples(image_detections(LABELS, max_dets=4, h=5, w=4),
                                 image_detections(LABELS, max_dets=4, h=5, w=4)), max_size=3),
       vote=st.booleans())
def test_two_submissions_pooled_in_lock_step(tmp_path_factory, images, vote):
    d = tmp_path_factory.mktemp('nms')
    write_csv(str(d / 'a.csv'), [(f'i{k}', 4, 5, a[2]) for k, (a, _) in enumerate(images)])
    write_csv(str(d / 'b.csv'), [(f'i{k}', 4, 5, b[2]) for k, (_, b) in enumerate(images)])
    out, again = str(d / 'out.csv'), str(d / 'again.csv')
    mask_nms_submissions([str(d / 'a.csv'), str(d / 'b.csv')], out, 0.5, vote)
    mask_nms_submissions([str(d / 'a.csv'), str(d / 'b.csv')], again, 0.5, vote)
    assert open(out, 'rb').read() == open(again, 'rb').read()
    rows = read_csv(out)
    assert len(rows) == len(images)
    for row, (a, b) in zip(rows, images):
        pooled = [(lab, float(f'{s:.6g}'), m) for lab, s, m in a[2] + b[2]]
        assert same_dets(row[3], slow_nms(pooled, 5, 4, 0.5, vote), 5, 4)


def test_cli_and_inputs_out_of_step(tmp_path):
    m = np.ones((2, 2), np.uint8)
    write_csv(str(tmp_path / 'a.csv'), [('x', 2, 2, [('/m/a', 0.9, m)]), ('y', 2, 2, [])])
    write_csv(str(tmp_path / 'b.csv'), [('x', 2, 2, [('/m/a', 0.8, m), ('/m/b', 0.8, m)]), ('y', 2, 2, [])])
    p = run_cli('-m', 'util.post.mask_nms', str(tmp_path / 'a.csv'), str(tmp_path / 'b.csv'), '-o',
                str(tmp_path / 'out.csv'))
    assert p.returncode == 0, p.stderr
    assert read_csv(str(tmp_path / 'out.csv')) == [
        ['x', '2', '2', f'/m/a 0.9 {encode(m)} /m/b 0.8 {encode(m)}'], ['y', '2', '2', '']]
    write_csv(str(tmp_path / 'c.csv'), [('x', 2, 2, []), ('z', 2, 2, [])])
    p = run_cli('-m', 'util.post.mask_nms', str(tmp_path / 'a.csv'), str(tmp_path / 'c.csv'), '-o',
                str(tmp_path / 'bad.csv'))
    assert p.returncode != 0 and 'c.csv:3: image z' in p.stderr and 'a.csv:3 has y' in p.stderr
    assert not os.path.exists(tmp_path / 'bad.csv')
    write_csv(str(tmp_path / 'd.csv'), [('x', 2, 2, [('/m/a', 0.5, 'not-base64!')]), ('y', 2, 2, [])])
    p = run_cli('-m', 'util.post.mask_nms', str(tmp_path / 'a.csv'), str(tmp_path / 'd.csv'), '-o',
                str(tmp_path / 'bad.csv'))
    assert p.returncode != 0 and 'd.csv:2: image x: detection 1: EncodedMask is not base64' in p.stderr
    write_csv(str(tmp_path / 'e.csv'), [('x', 2, 2, [])])
    p = run_cli('-m', 'util.post.mask_nms', str(tmp_path / 'a.csv'), str(tmp_path / 'e.csv'), '-o',
                str(tmp_path / 'bad.csv'))
    assert p.returncode != 0 and 'e.csv: ends before image y' in p.stderr
    assert not os.path.exists(tmp_path / 'bad.csv')


def test_corrupt_masks_stop_nms_and_voting_instead_of_being_laundered():
    """Runs that do not add up to H x W: pycocotools' iou would never return, voting would write an empty
    mask that passes validation. Every mask is checked first, also a label's only one."""
    h, w = 4, 4
    a = np.zeros((h, w), np.uint8)
    a[:2, :2] = 1
    good = encode(a)
    short = base64.b64encode(zlib.compress(b'0310', 9)).decode()      # runs 0, 3, 1, 3: 7 of 16 pixels
    for dets in ([('/m/a', 0.9, good), ('/m/a', 0.8, short), ('/m/a', 0.7, good)],
                 [('/m/a', 0.9, good), ('/m/b', 0.8, short)]):
        for vote in (False, True):
            with pytest.raises(DataError, match=r'^s\.csv:2: image i: detection 2: mask is not 4x4'):
                nms_detections(dets, h, w, 0.5, vote, 's.csv:2: image i')


def test_remembered_ious_equal_computed_ones_in_any_order_and_with_repeats():
    from pycocotools import mask as mask_utils

    from util.common.mask_codec import decode_encoded_batch, encode_mask
    from util.post.mask_nms import MaskIoUs, mask_ious
    rng = np.random.default_rng(3)
    masks = []
    for _ in range(6):
        m = np.zeros((20, 24), np.uint8)
        y, x = rng.integers(0, 14, 2)
        m[y:y + 6, x:x + 9] = 1
        masks.append(encode_mask(m))
    masks.append(encode_mask(np.zeros((20, 24), np.uint8)))           # empty: IoU 0 with everything
    memo = MaskIoUs(capacity=2)
    for trial in range(6):
        group = [masks[k] for k in rng.permutation(7)[:5]] + [masks[0]]   # a repeated mask too
        rles = decode_encoded_batch(group, 20, 24)
        direct = np.asarray(mask_utils.iou(rles, rles, np.zeros(len(rles), np.uint8))).reshape(len(rles), -1)
        assert np.array_equal(mask_ious(rles, group, memo), direct)
        assert np.array_equal(mask_ious(rles, group, memo), direct)      # the remembered table
    assert len(memo._known) <= 2
