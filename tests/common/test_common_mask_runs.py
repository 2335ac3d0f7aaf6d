"""runs_of / overlap_pixels: the areas, tight boxes and intersections the metric reads off a mask's runs
equal those of the decoded masks, for any mask, also for RLEs other tools write with empty runs inside;
and rules.mask_features built on them gives the dense features."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from util.common.rle_runs import overlap_pixels, pairwise_iou, run_totals, runs_of
from util.metric.rules import GroundTruth, mask_features


def _counts(mask):
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))['counts']


def _random_masks(rng, n, height, width):
    masks = []
    for _ in range(n):
        kind = rng.integers(4)
        m = np.zeros((height, width), bool)
        if kind == 1:
            m = rng.random((height, width)) < rng.random()
        elif kind == 2:
            y, x = rng.integers(0, height), rng.integers(0, width)
            m[y:y + rng.integers(1, height + 1), x:x + rng.integers(1, width + 1)] = True
        elif kind == 3:
            m[:] = True
        masks.append(m)
    return masks


def _dense_box(mask):
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max(), ys.max()] if len(xs) else [-1, -1, -1, -1]


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 6), st.integers(1, 6), st.integers(0, 2 ** 31))
def test_runs_give_the_decoded_areas_boxes_and_intersections(height, width, n, k, seed):
    rng = np.random.default_rng(seed)
    a, b = _random_masks(rng, n, height, width), _random_masks(rng, k, height, width)
    ra, rb = runs_of([_counts(m) for m in a], height), runs_of([_counts(m) for m in b], height)
    assert ra.areas.tolist() == [int(m.sum()) for m in a]
    assert ra.boxes.tolist() == [_dense_box(m) for m in a]
    assert overlap_pixels(ra, rb).tolist() == [[int((p & q).sum()) for q in b] for p in a]


def test_empty_runs_inside_are_read_as_the_decoded_mask():
    # Uncompressed counts with zero-length runs (legal, and written by other tools): a foreground run of
    # length 0 must not widen the box, a background run of 0 joins two foreground runs.
    height, width = 4, 5
    for counts in ([1, 1, 10, 0, 8], [0, 3, 0, 2, 15], [2, 0, 0, 4, 6, 0, 8], [20]):
        rle = mask_utils.frPyObjects({'size': [height, width], 'counts': counts}, height, width)
        dense = mask_utils.decode(rle).astype(bool)
        runs = runs_of([rle['counts']], height)
        assert runs.areas.tolist() == [int(dense.sum())], counts
        assert runs.boxes.tolist() == [_dense_box(dense)], counts
        full = runs_of([_counts(np.ones((height, width)))], height)
        assert overlap_pixels(runs, full).tolist() == [[int(dense.sum())]], counts


def test_long_runs_across_columns_of_a_large_image():
    mask = np.zeros((1000, 700), bool)
    mask[900:, 10:600] = True
    mask[:, 650:] = True
    other = np.zeros((1000, 700), bool)
    other[950:, 500:690] = True
    r, o = runs_of([_counts(mask)], 1000), runs_of([_counts(other)], 1000)
    assert r.boxes.tolist() == [_dense_box(mask)] and r.areas.tolist() == [int(mask.sum())]
    assert overlap_pixels(r, o).tolist() == [[int((mask & other).sum())]]


def test_mask_features_equal_the_dense_features():
    rng = np.random.default_rng(3)
    height, width = 30, 23
    dets, truth = _random_masks(rng, 9, height, width), _random_masks(rng, 4, height, width)
    gt_masks = [{'size': [height, width], 'counts': _counts(m)} for m in truth]
    gt_masks[1] = None                                                  # a box-only GT row
    gt = GroundTruth(['a'] * 4, np.zeros((4, 4)), np.zeros(4, bool), gt_masks)
    f = mask_features([{'size': [height, width], 'counts': _counts(m).decode()} for m in dets], gt,
                      height, width)
    assert f.areas.tolist() == [int(m.sum()) for m in dets]
    expected = [[int((d & t).sum()) if j != 1 else 0 for j, t in enumerate(truth)] for d in dets]
    assert f.overlaps.tolist() == expected
    for box, m in zip(f.boxes, dets):
        if m.any():
            x0, y0, x1, y1 = _dense_box(m)          # the reference's box of a decoded mask: [min, max + 1) / size
            assert box.tolist() == [y0 / height, x0 / width, (y1 + 1) / height, (x1 + 1) / width]
        else:
            assert box.tolist() == [0.0] * 4


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=12), st.lists(st.integers(0, 30), max_size=9).map(
    lambda runs: mask_utils.frPyObjects({'size': [1, max(1, sum(runs))], 'counts': runs}, 1,
                                        max(1, sum(runs)))['counts'])), max_size=8), st.integers(1, 7))
def test_the_runs_pass_sums_the_runs_as_the_strict_check_does(strings, height):
    """runs_of reads and checks in one pass: its totals are run_totals' (-1 where malformed, any bytes),
    and a malformed string, never read as runs, leaves its neighbours' runs as they are alone."""
    runs = runs_of(strings, height)
    assert runs.totals.tolist() == run_totals(strings).tolist()
    for k, s in enumerate(strings):
        alone = runs_of([s], height)
        assert runs.areas[k] == alone.areas[0] and runs.boxes[k].tolist() == alone.boxes[0].tolist()
        own = slice(runs.offsets[k], runs.offsets[k + 1])
        assert runs.starts[own].tolist() == alone.starts.tolist() and runs.stops[own].tolist() == alone.stops.tolist()
        if runs.totals[k] < 0:
            assert alone.areas[0] == 0 and alone.starts.size == 0


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(1, 9), st.integers(0, 2 ** 31))
def test_pairwise_iou_is_pycocotools_iou_to_the_bit(height, width, n, seed):
    masks = _random_masks(np.random.default_rng(seed), n, height, width)
    rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
    want = np.asarray(mask_utils.iou(rles, rles, np.zeros(n, np.uint8))).reshape(n, n)
    assert np.array_equal(pairwise_iou([r['counts'] for r in rles], height), want)
    runs = runs_of([r['counts'] for r in rles], height)
    assert np.array_equal(overlap_pixels(runs), overlap_pixels(runs, runs))
