"""Submission fusion (util.post.fuse): against ensemble-boxes' own output, dense mask averages, mask NMS,
itself; file handling (order, missing images, --jobs) and bad input through the real CLI."""
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from ensemble_boxes import weighted_boxes_fusion
from pycocotools import mask as mask_utils

from util.common.cli import run
from util.common.mask_codec import decode_encoded, decode_mask, encode_binary, encode_mask
from util.common.submission import SubmissionWriter, iter_submission
from util.post.fuse import (
    CONF_TYPES,
    FuseOptions,
    average_mask,
    fuse_image,
    fuse_submissions,
    main,
    tight_boxes,
    wbf_boxes,
)
from util.post.mask_nms import mask_nms_submissions

LABELS = ['/m/01g317', '/m/0k4j', '/m/02zt3']


# ---- synthetic submissions ----------------------------------------------------------------------
def blob(h, w, y0, x0, y1, x1, rng):
    """An ellipse inscribed (roughly) in the box [x0, x1) x [y0, y1), so masks are not their boxes."""
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = (y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2
    ry, rx = (y1 - y0) / 2 * rng.uniform(0.8, 1.0), (x1 - x0) / 2 * rng.uniform(0.8, 1.0)
    return ((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) <= 1).astype(np.uint8)


def disjoint_image(rng, h, w, per_label=3):
    """Detections whose same-label masks lie in different cells of a 2x3 grid (no overlap within a
    label); labels share cells, so different labels overlap."""
    cells = [(r, c) for r in range(2) for c in range(3)]
    dets = []
    for label in LABELS:
        for r, c in (cells[i] for i in rng.choice(len(cells), per_label, replace=False)):
            y0, x0 = r * h // 2, c * w // 3
            m = blob(h, w, y0, x0, y0 + h // 2, x0 + w // 3, rng)
            dets.append((label, round(float(rng.uniform(0.05, 1.0)), 4), encode_mask(m)))
    return dets


def jittered(dets, h, w, rng, drop=0.2):
    """Another model's view of the same objects: masks shifted by a pixel or two, other scores, some missed."""
    out = []
    for label, _, enc in dets:
        if rng.random() < drop:
            continue
        m = np.roll(decode_mask(enc, h, w), tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
        out.append((label, round(float(rng.uniform(0.05, 1.0)), 4), encode_mask(m)))
    return out


def write(path, images):
    """images: [(image_id, width, height, dets)] -> a submission through the project's writer."""
    with SubmissionWriter(str(path)) as w:
        for image_id, width, height, dets in images:
            w.write(image_id, width, height, dets)
    return str(path)


def read(path):
    return {r.image_id: r for r in iter_submission(str(path))}


def sizes(i):
    return (48, 64) if i % 2 else (70, 40)                  # (h, w): landscape and portrait images


@pytest.fixture(scope='module')
def pair(tmp_path_factory):
    """A (no same-label overlaps) and B (A's objects jittered, in another order, one image missing, one
    extra)."""
    d = tmp_path_factory.mktemp('fuse')
    rng = np.random.default_rng(0)
    a_images, b_images = [], []
    for i in range(6):
        h, w = sizes(i)
        dets = disjoint_image(rng, h, w)
        a_images.append((f'img{i}', w, h, dets))
        if i != 2:
            b_images.append((f'img{i}', w, h, jittered(dets, h, w, rng)))
    b_images = b_images[::-1] + [('extra', 64, 48, disjoint_image(rng, 48, 64))]
    return write(d / 'a.csv', a_images), write(d / 'b.csv', b_images), a_images, b_images


# ---- one image ----------------------------------------------------------------------------------
def random_boxes(rng, objects, n, w, h):
    """n boxes, each a jittered copy of one of ``objects`` (so that clusters form), inside the image."""
    picked = objects[rng.integers(0, len(objects), n)]
    jitter = rng.normal(0, 0.04, (n, 4)) * np.tile(picked[:, 2:] - picked[:, :2], 2)
    return np.clip(picked + jitter, 0, [w, h, w, h])


@pytest.mark.parametrize('conf_type', CONF_TYPES)
def test_wbf_boxes_equal_the_library_on_normalised_input(conf_type):
    rng = np.random.default_rng(1)
    w, h = 300, 500                                          # portrait
    x0, y0 = rng.uniform(0, w - 40, 12), rng.uniform(0, h - 40, 12)
    objects = np.stack([x0, y0, np.minimum(x0 + rng.uniform(20, 200, 12), w), np.minimum(y0 + rng.uniform(20, 300, 12), h)], 1)
    boxes = [random_boxes(rng, objects, n, w, h) for n in (30, 25, 0)]
    scores = [rng.uniform(0.01, 1, len(b)) for b in boxes]
    labels = [rng.integers(0, 3, len(b)) for b in boxes]
    weights = [1.0, 2.5, 0.5]
    got_boxes, got_scores, got_labels = wbf_boxes(boxes, scores, labels, w, h, weights, 0.55, 0.0, conf_type)
    scale = np.array([w, h, w, h])
    ref_boxes, ref_scores, ref_labels = weighted_boxes_fusion(
        [(b / scale).tolist() for b in boxes], [s.tolist() for s in scores], [lab.tolist() for lab in labels],
        weights=weights, iou_thr=0.55, skip_box_thr=0.0, conf_type=conf_type)
    assert len(got_boxes) == len(ref_boxes) and 5 < len(ref_boxes) < 55   # some boxes were merged
    np.testing.assert_allclose(got_boxes, ref_boxes * scale, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(got_scores, ref_scores)
    np.testing.assert_array_equal(got_labels, ref_labels)


@pytest.mark.parametrize('conf_type', CONF_TYPES)
def test_fuse_image_scores_are_the_librarys_on_the_masks_boxes(conf_type):
    """The whole per-image path (masks -> tight boxes -> WBF): scores and labels as the library gives them."""
    rng = np.random.default_rng(2)
    h, w = 60, 40
    dets = [disjoint_image(rng, h, w) for _ in range(2)]
    dets[1] = jittered(dets[0], h, w, rng) + dets[1][:3]
    weights = (1.0, 2.0)
    fused = fuse_image(dets, w, h, FuseOptions(weights=weights, conf_type=conf_type).checked(2))
    scale = np.array([w, h, w, h])
    boxes = [tight_boxes([decode_encoded(d[2], h, w) for d in ds]) / scale for ds in dets]
    _, ref_scores, ref_labels = weighted_boxes_fusion(
        [b.tolist() for b in boxes], [[d[1] for d in ds] for ds in dets],
        [[LABELS.index(d[0]) for d in ds] for ds in dets], weights=list(weights), iou_thr=0.55, conf_type=conf_type)
    assert [d[1] for d in fused] == list(np.minimum(ref_scores, 1.0))
    assert [LABELS.index(d[0]) for d in fused] == [int(v) for v in ref_labels]
    assert len(fused) < sum(map(len, dets))


def test_portrait_and_border_boxes_survive_normalisation():
    """Masks in the lower part of a portrait image (y beyond the width) and touching the right and bottom
    borders: the library alone, fed pixels, clips them to nothing; through fuse_image they come back."""
    h, w = 120, 50
    m1 = np.zeros((h, w), np.uint8)
    m1[80:, 30:] = 1                                         # bottom-right corner, touches two borders
    m2 = np.zeros((h, w), np.uint8)
    m2[0:120, 0:10] = 1                                      # full height, left border
    dets = [('/m/a', 0.9, encode_mask(m1)), ('/m/a', 0.6, encode_mask(m2))]
    pixel = tight_boxes([decode_encoded(d[2], h, w) for d in dets])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        clipped, _, _ = weighted_boxes_fusion([pixel.tolist()], [[0.9, 0.6]], [[0, 0]])
    assert len(clipped) < 2 or not np.allclose(clipped * [w, h, w, h], pixel)   # what normalising avoids
    for method in ('wbf', 'vote'):
        fused = fuse_image([dets, dets], w, h, FuseOptions(method=method).checked(2))
        assert [(d[0], d[2]) for d in fused] == [(d[0], d[2]) for d in dets]
        np.testing.assert_allclose([d[1] for d in fused], [0.9, 0.6], rtol=1e-6)
    fused_boxes, _, _ = wbf_boxes([pixel], [[0.9, 0.6]], [[0, 0]], w, h, [1.0], 0.55, 0.0, 'box_and_model_avg')
    np.testing.assert_allclose(fused_boxes, pixel, atol=1e-4)   # float32 inside the library


def dense_average(masks, weights, thr):
    acc = sum(wt * m.astype(np.float64) for wt, m in zip(weights, masks))
    return (acc / sum(weights) > thr).astype(np.uint8)


@pytest.mark.parametrize('n', [2, 3, 5, 9, 14])     # 9: too many coalitions; 14: too many members
def test_average_mask_equals_the_dense_weighted_mean(n):
    rng = np.random.default_rng(n)
    h, w = 30, 40
    masks = [blob(h, w, *rng.integers(0, 12, 2), *rng.integers(18, 30, 2), rng) for _ in range(n)]
    weights = rng.uniform(0.1, 1.0, n).round(3)
    rles = [decode_encoded(encode_mask(m), h, w) for m in masks]
    for thr in (0.3, 0.5, 0.77):
        got = mask_utils.decode(average_mask(rles, weights, thr))
        np.testing.assert_array_equal(got, dense_average(masks, weights, thr))


def test_wbf_mask_is_the_weighted_average_of_the_cluster_members():
    h, w = 40, 60
    rng = np.random.default_rng(3)
    m = [blob(h, w, 5, 5 + k, 30, 40 + k, rng) for k in range(3)]       # one object seen three times
    other = blob(h, w, 5, 45, 20, 60, rng)                               # a second object, far away
    dets = [[('/m/a', 0.8, encode_mask(m[0])), ('/m/a', 0.7, encode_mask(other))],
            [('/m/a', 0.4, encode_mask(m[1]))], [('/m/a', 0.9, encode_mask(m[2]))]]
    weights = (1.0, 3.0, 0.5)
    for thr in (0.4, 0.6):
        fused = fuse_image(dets, w, h, FuseOptions(weights=weights, mask_thr=thr).checked(3))
        assert len(fused) == 2
        big = next(d for d in fused if d[2] != dets[0][1][2])
        expect = dense_average(m, [0.8 * 1.0, 0.4 * 3.0, 0.9 * 0.5], thr)
        np.testing.assert_array_equal(decode_mask(big[2], h, w), expect)
        assert any(d[2] == dets[0][1][2] for d in fused)                 # a one-member cluster: its mask


def test_vote_scores_count_absent_inputs_as_zero():
    h, w = 40, 60
    rng = np.random.default_rng(4)
    a, b = blob(h, w, 5, 5, 30, 40, rng), blob(h, w, 6, 6, 30, 40, rng)
    dets = [[('/m/a', 0.8, encode_mask(a))], [('/m/a', 0.5, encode_mask(b))], []]
    fused = fuse_image(dets, w, h, FuseOptions(method='vote', weights=(1, 2, 1)).checked(3))
    assert len(fused) == 1
    assert fused[0][1] == pytest.approx((0.8 * 1 + 0.5 * 2) / 4)
    np.testing.assert_array_equal(decode_mask(fused[0][2], h, w), dense_average([a, b], [0.8, 1.0], 0.5))


def test_avg_can_exceed_one_and_is_clipped_the_others_cannot():
    """The docstring's claim: with unequal weights and two boxes of the heavy input in one cluster, avg's
    score is 4/3 in the library; ours is clipped to 1; the other conf types stay <= 1 on random clusters."""
    box = [[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.52]]
    _, scores, _ = weighted_boxes_fusion([box, []], [[1.0, 1.0], []], [[0, 0], []], weights=[2, 1], conf_type='avg')
    assert scores[0] == pytest.approx(4 / 3)
    h, w = 50, 50
    masks = [np.zeros((h, w), np.uint8) for _ in range(2)]
    masks[0][5:25, 5:25] = 1
    masks[1][5:26, 5:25] = 1
    dets = [[('/m/a', 1.0, encode_mask(m)) for m in masks], []]
    assert fuse_image(dets, w, h, FuseOptions(weights=(2, 1), conf_type='avg').checked(2))[0][1] == 1.0
    rng = np.random.default_rng(5)
    for conf_type in ('box_and_model_avg', 'absent_model_aware_avg', 'max'):
        for _ in range(30):
            n = rng.integers(2, 6, 3)
            base = rng.uniform(0, 0.5, 2)
            boxes = [[list(base) + list(base + 0.4 + rng.uniform(0, 0.02, 2)) for _ in range(k)] for k in n]
            _, scores, _ = weighted_boxes_fusion(boxes, [rng.uniform(0.9, 1, k).tolist() for k in n],
                                                 [[0] * k for k in n], weights=rng.uniform(0.1, 5, 3).tolist(),
                                                 conf_type=conf_type)
            assert scores.max() <= 1 + 1e-6, conf_type


# ---- files --------------------------------------------------------------------------------------
@pytest.mark.parametrize('method,conf_type', [('wbf', c) for c in CONF_TYPES] + [('vote', None), ('nms', None)])
def test_a_submission_fused_with_itself_is_itself(pair, tmp_path, method, conf_type):
    a = pair[0]
    out = tmp_path / 'self.csv'
    fuse_submissions([a, a], str(out), FuseOptions(method=method, conf_type=conf_type or 'box_and_model_avg'))
    got, ref = read(out), read(a)
    assert list(got) == list(ref)
    for image_id, row in ref.items():
        ordered = sorted(row.detections, key=lambda d: -d[1]) if method != 'nms' else row.detections
        fused = got[image_id].detections
        assert [(d[0], d[2]) for d in fused] == [(d[0], d[2]) for d in ordered], image_id
        np.testing.assert_allclose([d[1] for d in fused], [d[1] for d in ordered], rtol=2e-6)


def test_order_missing_images_and_jobs(pair, tmp_path):
    a, b, a_images, _ = pair
    outs = []
    for jobs, chunk in ((1, 8), (2, 1), (2, 3)):
        outs.append(tmp_path / f'fused{jobs}_{chunk}.csv')
        stats = fuse_submissions([a, b], str(outs[-1]), FuseOptions(weights=(1, 2)), jobs=jobs, chunk=chunk)
    assert outs[0].read_bytes() == outs[1].read_bytes() == outs[2].read_bytes()
    got = read(outs[0])
    assert list(got) == [f'img{i}' for i in range(6)] + ['extra']           # a's order, then b's own
    assert stats.images == 7 and stats.detections_out < stats.detections_in
    # img2 is only in a: each detection alone, its score weighted by a's share of the weights.
    ref = sorted(a_images[2][3], key=lambda d: -d[1])
    assert [d[2] for d in got['img2'].detections] == [d[2] for d in ref]
    np.testing.assert_allclose([d[1] for d in got['img2'].detections], [d[1] / 3 for d in ref], rtol=5e-6)     # 6 digits
    # images in both are fused: fewer detections than the two together, masks of the image's size.
    for i in (0, 1, 3):
        n_both = len(a_images[i][3]) + len(read(b)[f'img{i}'].detections)
        assert len(a_images[i][3]) <= len(got[f'img{i}'].detections) < n_both
        for d in got[f'img{i}'].detections:
            decode_encoded(d[2], got[f'img{i}'].height, got[f'img{i}'].width)


def test_nms_method_equals_mask_nms_on_inputs_in_lockstep(tmp_path):
    rng = np.random.default_rng(6)
    a_images, b_images = [], []
    for i in range(4):
        h, w = sizes(i)
        dets = disjoint_image(rng, h, w)
        a_images.append((f'i{i}', w, h, dets))
        b_images.append((f'i{i}', w, h, jittered(dets, h, w, rng, drop=0)))
    a, b = write(tmp_path / 'a.csv', a_images), write(tmp_path / 'b.csv', b_images)
    mask_nms_submissions([a, b], str(tmp_path / 'nms.csv'), iou_thr=0.5)
    fuse_submissions([a, b], str(tmp_path / 'fused.csv'), FuseOptions(method='nms', iou_thr=0.5))
    assert (tmp_path / 'fused.csv').read_bytes() == (tmp_path / 'nms.csv').read_bytes()


def test_max_per_img_keeps_the_best(pair, tmp_path):
    a, b = pair[:2]
    fuse_submissions([a, b], str(tmp_path / 'all.csv'))
    fuse_submissions([a, b], str(tmp_path / 'top.csv'), FuseOptions(max_per_img=2))
    full, top = read(tmp_path / 'all.csv'), read(tmp_path / 'top.csv')
    for image_id, row in full.items():
        assert top[image_id].detections == row.detections[:2]


def test_cli_subprocess(pair, tmp_path):
    a, b = pair[:2]
    out = tmp_path / 'cli.csv'
    proc = run_cli(['-m', 'util.post.fuse', a, b, '--out', str(out), '--weights', '1', '2', '--jobs', '2',
                    '--method', 'wbf', '--conf-type', 'max', '--no-progress'])
    assert 'input detections fused into' in proc.stderr
    fuse_submissions([a, b], str(tmp_path / 'lib.csv'), FuseOptions(weights=(1, 2), conf_type='max'))
    assert out.read_bytes() == (tmp_path / 'lib.csv').read_bytes()
    bad = run_cli(['-m', 'util.post.fuse', a, b, '--out', str(tmp_path / 'bad.csv'), '--weights', '1',
                   '--no-progress'], check=False)
    assert bad.returncode == 1 and bad.stderr.strip() == 'error: 1 weights for 2 inputs'
    assert not os.path.exists(tmp_path / 'bad.csv')


def _damage(path, old, new):
    text = Path(path).read_text()
    assert old in text
    Path(path).write_text(text.replace(old, new, 1))


@pytest.mark.parametrize('case', ['size', 'mask', 'twice', 'header', 'columns', 'score', 'weights'])
def test_bad_input_is_one_line_naming_the_place(pair, tmp_path, capsys, case):
    a_src, b_src = pair[:2]
    a, b = str(tmp_path / 'a.csv'), str(tmp_path / 'b.csv')
    shutil.copy(a_src, a)
    shutil.copy(b_src, b)
    args = [a, b, '--out', str(tmp_path / 'out.csv'), '--no-progress', '--jobs', '2']
    lines_b = Path(b).read_text().splitlines()
    k = next(i for i, line in enumerate(lines_b) if line.startswith('img3,'))
    expect = {
        'size': f'{b}:{k + 1}: image img3 is 64x48, but {a}:5 has',
        'mask': f'{b}:{k + 1}: image img3: detection 1: EncodedMask',
        'twice': f'{b}:{len(lines_b) + 1}: image img3 appears twice (first on line {k + 1})',
        'header': f'{a}:1: header',
        'columns': f'{b}:{k + 1}: 5 columns, expected 4',
        'score': f'{b}:{k + 1}: image img3: detection 1: confidence',
        'weights': '3 weights for 2 inputs',
    }[case]
    row = lines_b[k]
    image_id, width, height, preds = row.split(',')
    if case == 'size':
        _damage(b, row, f'{image_id},{height},{width},{preds}')     # img3 is 64 x 48: swapped is 48 x 64
        expect = f'{b}:{k + 1}: image img3 is 48x64, but {a}:5 has 64x48'
    elif case == 'mask':
        label, score, enc = preds.split(' ')[:3]
        _damage(b, f'{label} {score} {enc}', f'{label} {score} {enc[:-8]}')
    elif case == 'twice':
        Path(b).write_text(Path(b).read_text() + row + '\n')
    elif case == 'header':
        _damage(a, 'ImageID,', 'ImageId,')
    elif case == 'columns':
        _damage(b, row, row + ',x')
    elif case == 'score':
        label, score, enc = preds.split(' ')[:3]
        _damage(b, f'{label} {score} {enc}', f'{label} 1.5 {enc}')
    else:
        args += ['--weights', '1', '2', '3']
    assert run(main, args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f'error: {expect}'), err
    assert not os.path.exists(tmp_path / 'out.csv') and not os.path.exists(tmp_path / 'out.csv.tmp')


def test_rle_encoding_is_the_codecs(pair):
    """Fused masks are written as the codec writes them: re-encoding a decoded fused mask gives the same text."""
    a, b = pair[:2]
    rows = read(a)
    h, w = rows['img0'].height, rows['img0'].width
    dets = [rows['img0'].detections, read(b)['img0'].detections]
    for label, _, enc in fuse_image(dets, w, h, FuseOptions().checked(2)):
        assert encode_mask(decode_mask(enc, h, w)) == enc
        assert encode_binary(decode_mask(enc, h, w))['size'] == [h, w]


def test_crlf_and_bom_files_fuse_like_plain_ones(pair, tmp_path):
    """Files written on Windows (CRLF) or saved by Excel (a byte-order mark) index and read the same."""
    a, b = pair[:2]
    windows = tmp_path / 'a_windows.csv'
    windows.write_bytes(b'\xef\xbb\xbf' + Path(a).read_bytes().replace(b'\n', b'\r\n'))
    fuse_submissions([a, b], str(tmp_path / 'plain.csv'))
    fuse_submissions([str(windows), b], str(tmp_path / 'windows.csv'), jobs=2, chunk=2)
    assert (tmp_path / 'plain.csv').read_bytes() == (tmp_path / 'windows.csv').read_bytes()


@pytest.mark.parametrize('method', ['wbf', 'vote', 'nms'])
def test_skip_box_thr_drops_low_scores_before_fusion(pair, method):
    a, b = pair[:2]
    rows_a, rows_b = read(a), read(b)
    dets = [rows_a['img0'].detections, rows_b['img0'].detections]
    h, w = rows_a['img0'].height, rows_a['img0'].width
    thr = 0.5
    kept = [[d for d in ds if d[1] >= thr] for ds in dets]
    skipped = fuse_image(dets, w, h, FuseOptions(method=method, skip_box_thr=thr).checked(2))
    assert skipped == fuse_image(kept, w, h, FuseOptions(method=method).checked(2))
    assert len(skipped) < len(fuse_image(dets, w, h, FuseOptions(method=method).checked(2)))
