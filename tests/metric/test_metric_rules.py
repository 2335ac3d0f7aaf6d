"""The metric's rules (util.metric.rules) against a literal implementation and hand-computed cases, in both tie
orders: the official scorer's (the default) and FP-first."""
from __future__ import annotations

import dataclasses
import math

import _eval_literal as literal
import numpy as np
import pytest
from _eval_cases import (
    BEAR,
    CARNIVORE,
    GUITAR,
    MAN,
    PERSON,
    TEDDY,
    TOY,
    random_image,
    rle,
    to_fast,
)
from _eval_literal import LImage, LObject

from util.common.hierarchy import load_default, read_class_names
from util.metric.rules import (
    APAccumulator,
    Classes,
    Detections,
    GroundTruth,
    average_precision,
    evaluate_image,
    precision_recall,
)

H, W = 10, 10


@pytest.fixture(scope='module')
def classes():
    return Classes(list(read_class_names()), load_default())


def fast_image(img, classes, ties='official'):
    gt, dets = to_fast(img, classes)
    return evaluate_image(gt, dets, classes, img.height, img.width, ties)


def fast_map(images, classes, ties=None):
    """mAP of ``images`` (their ImageIDs sort in list order); ``ties`` None: the rules' defaults."""
    acc = APAccumulator(classes) if ties is None else APAccumulator(classes, ties)
    for k, img in enumerate(images):
        gt, dets = to_fast(img, classes)
        if ties is None:
            result = evaluate_image(gt, dets, classes, img.height, img.width)
        else:
            result = evaluate_image(gt, dets, classes, img.height, img.width, ties)
        acc.add(result, f'{k:05d}')
    return acc.result()


def same_entries(fast, slow, classes):
    """Per class, the multiset of (score, tp) entries, the counted GT and the kept detections agree."""
    entries, counted, kept = slow
    assert {classes.mids[c]: n for c, n in fast.counted_gt.items()} == counted
    assert {classes.mids[c]: n for c, n in fast.detections.items()} == kept
    got = {classes.mids[c]: sorted(zip(s.tolist(), t.tolist())) for c, (s, t) in fast.entries.items()}
    assert got == {k: sorted(v) for k, v in entries.items()}


@pytest.mark.parametrize('ties', ['official', 'fp-first'])
def test_random_images_match_the_literal_rules(classes, ties):
    rng = np.random.default_rng(20190601)
    hierarchy = classes.hierarchy
    images = [random_image(rng) for _ in range(1200)]
    fired = {}
    for k, img in enumerate(images):
        fast = fast_image(img, classes, ties)
        slow = literal.evaluate_image(img, classes.mids, hierarchy, fired, ties)
        assert (fast is None) == (slow is None), k
        if fast is not None:
            same_entries(fast, slow, classes)
    assert all(fired[k] >= 50 for k in ('tp', 'fp', 'box_ignored', 'group_ignored', 'group_entries')), fired
    for start in range(0, len(images), 40):                  # mAP over groups of images
        group = images[start:start + 40]
        res = fast_map(group, classes, ties)
        expected, aps = literal.mean_ap(group, classes.mids, hierarchy, ties)
        got = {classes.mids[c]: ap for c, ap in enumerate(res.ap) if not math.isnan(ap)}
        assert got == pytest.approx(aps, abs=1e-12)
        assert res.mean_ap == pytest.approx(expected, abs=1e-12)


def square(y0, x0, y1, x1, h=H, w=W):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def norm_box(m, h=H, w=W):
    ys, xs = np.nonzero(m)
    return (xs.min() / w, (xs.max() + 1) / w, ys.min() / h, (ys.max() + 1) / h)


def run(images, classes):
    return fast_map(images, classes)


def ap_of(res, classes, mid):
    return res.ap[classes.index[mid]]


def test_second_detection_on_a_box_only_gt_is_a_false_positive(classes):
    box_only = square(0, 0, 4, 4)
    masked = square(5, 5, 9, 9)
    img = LImage(H, W, [LObject(MAN, norm_box(box_only), False, None), LObject(MAN, norm_box(masked), False, masked)])
    img.detections = [(MAN, 0.9, box_only), (MAN, 0.8, box_only), (MAN, 0.7, masked)]
    res = run([img], classes)
    c = classes.index[MAN]
    assert res.counted_gt[c] == 1                       # box-only GT never count
    assert res.detections[c] == 3
    # 0.9 ignored (box-only match), 0.8 FP (that GT is taken), 0.7 TP -> precision 1/2 at recall 1
    assert ap_of(res, classes, MAN) == pytest.approx(0.5)


def test_group_of_with_mask_counts_once_at_its_best_score(classes):
    group = square(0, 0, 10, 10)
    img = LImage(H, W, [LObject(MAN, norm_box(group), True, group)])
    img.detections = [(MAN, 0.3, square(0, 0, 3, 3)), (MAN, 0.6, square(4, 4, 7, 7)), (MAN, 0.2, square(6, 0, 9, 2))]
    gt, dets = to_fast(img, classes)
    out = evaluate_image(gt, dets, classes, H, W)
    c = classes.index[MAN]
    assert out.counted_gt[c] == 1
    scores, tp = out.entries[c]
    assert scores.tolist() == [0.6] and tp.tolist() == [1.0]


def test_box_only_group_of_ignores_any_number(classes):
    group = square(0, 0, 10, 10)
    masked = square(0, 0, 2, 2)
    img = LImage(H, W, [LObject(MAN, norm_box(group), True, None), LObject(MAN, norm_box(masked), False, masked)])
    img.detections = [(MAN, 0.9, square(2, 2, 5, 5)), (MAN, 0.8, square(5, 5, 8, 8)), (MAN, 0.1, masked)]
    res = run([img], classes)
    assert ap_of(res, classes, MAN) == 1.0              # both strays ignored, the masked GT found


def test_verified_negative_parent_makes_its_descendants_evaluatable(classes):
    man = square(0, 0, 5, 5)
    img = LImage(H, W, [LObject(MAN, norm_box(man), False, man)], [(CARNIVORE, False)])
    img.detections = [(TEDDY, 0.9, square(5, 5, 9, 9)), (BEAR, 0.8, square(5, 5, 9, 9)), (GUITAR, 0.95, man)]
    gt, dets = to_fast(img, classes)
    out = evaluate_image(gt, dets, classes, H, W)
    assert set(out.entries) == {classes.index[TEDDY], classes.index[BEAR]}   # Guitar is not evaluatable
    assert out.entries[classes.index[TEDDY]][1].tolist() == [0.0]


def test_multi_parent_gt_counts_for_every_ancestor(classes):
    teddy = square(2, 2, 8, 8)
    img = LImage(H, W, [LObject(TEDDY, norm_box(teddy), False, teddy)])
    img.detections = [(TOY, 0.5, teddy)]
    res = run([img], classes)
    for mid in (TEDDY, TOY, BEAR, CARNIVORE):
        assert res.counted_gt[classes.index[mid]] == 1
    assert ap_of(res, classes, TOY) == 1.0
    for mid in (TEDDY, BEAR, CARNIVORE):                # GT, no detections: AP 0, and they count in the mean
        assert ap_of(res, classes, mid) == 0.0
    assert res.mean_ap == 0.25
    assert math.isnan(ap_of(res, classes, PERSON))      # no GT: not in the mean


def test_empty_masks_and_the_score_floor_drop_detections(classes):
    man = square(0, 0, 5, 5)
    img = LImage(H, W, [LObject(MAN, norm_box(man), False, man)])
    img.detections = [(MAN, 0.9, np.zeros((H, W), np.uint8)), (MAN, -10.0, square(6, 6, 9, 9)), (MAN, 0.1, man)]
    res = run([img], classes)
    assert res.detections[classes.index[MAN]] == 1
    assert ap_of(res, classes, MAN) == 1.0


def test_images_without_any_ground_truth_are_ignored(classes):
    man = square(0, 0, 5, 5)
    with_gt = LImage(H, W, [LObject(MAN, norm_box(man), False, man)], detections=[(MAN, 0.5, man)])
    no_gt = LImage(H, W, detections=[(MAN, 0.9, square(5, 5, 9, 9))])
    res = run([with_gt, no_gt], classes)
    assert (res.images_evaluated, res.images_ignored) == (1, 1)
    assert ap_of(res, classes, MAN) == 1.0


def test_tie_orders_agree_without_ties_and_official_is_never_lower(classes):
    """With distinct scores both tie orders give the same APs; with ties (the generator makes exact
    duplicates) the official order can only score higher than false-positives-first."""
    rng = np.random.default_rng(7)
    images = [random_image(rng) for _ in range(300)]
    distinct = iter(rng.permutation(100_000) / 100_000 + 1e-6)
    untied = [dataclasses.replace(img, detections=[(label, float(next(distinct)), m)
                                                   for label, _, m in img.detections]) for img in images]
    a, b = fast_map(untied, classes, ties='fp-first'), fast_map(untied, classes, ties='official')
    assert np.array_equal(a.ap, b.ap, equal_nan=True)
    tied_p, tied_o = fast_map(images, classes, ties='fp-first'), fast_map(images, classes, ties='official')
    scored = ~np.isnan(tied_p.ap)
    assert (tied_o.ap[scored] >= tied_p.ap[scored] - 1e-12).all()
    assert (tied_o.ap[scored] > tied_p.ap[scored]).any()         # the generator's ties do matter


def test_scores_rounded_to_two_decimals_default_is_the_official_order(classes):
    """Scores rounded to 2 decimals (as many real submissions): the rules' default order is the literal
    construction of the official scorer's, FP-first is the literal FP-first, and the two differ."""
    rng = np.random.default_rng(2019)
    images = [random_image(rng) for _ in range(400)]
    rounded = [dataclasses.replace(img, detections=[(label, round(score, 2), m) for label, score, m in img.detections])
               for img in images]
    assert len({d[1] for img in rounded for d in img.detections}) <= 102
    default, fp_first = fast_map(rounded, classes), fast_map(rounded, classes, ties='fp-first')
    for got, ties in ((default, 'official'), (fp_first, 'fp-first')):
        expected, aps = literal.mean_ap(rounded, classes.mids, classes.hierarchy, ties)
        per_class = {classes.mids[c]: ap for c, ap in enumerate(got.ap) if not math.isnan(ap)}
        assert per_class == pytest.approx(aps, abs=1e-12)
        assert got.mean_ap == pytest.approx(expected, abs=1e-12)
    assert default.mean_ap > fp_first.mean_ap + 1e-4         # the choice matters at this rounding


def test_ties_names():
    with pytest.raises(ValueError, match='fp-first'):
        APAccumulator(Classes([MAN], load_default()), 'pessimistic')


def test_equal_scores_rank_false_positives_first():
    precision, recall = precision_recall(np.array([0.5, 0.5, 0.9]), np.array([1.0, 0.0, 1.0]), 2.0, 'fp-first')
    assert precision.tolist() == [1.0, 0.5, 2 / 3]
    assert recall.tolist() == [0.5, 0.5, 1.0]
    assert average_precision(precision, recall) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_tied_detections_on_one_gt_match_in_input_order(classes):
    man, group = square(0, 0, 6, 6), square(0, 0, 4, 4)
    inside = square(0, 0, 4, 6)        # IoU 24/36 with the man, IoA 16/24 with the group
    whole = man                        # IoU 1 with the man, IoA 16/36 with the group
    img = LImage(H, W, [LObject(MAN, norm_box(man), False, man), LObject(MAN, norm_box(group), True, group)])
    # FP-first keeps equal scores in input order: the first listed takes the man; the second can then only
    # be ignored inside the group. The official order is numpy's argsort reversed: here the last listed first.
    img.detections = [(MAN, 0.5, inside), (MAN, 0.5, whole)]
    assert fast_image(img, classes, 'fp-first').entries[classes.index[MAN]][1].tolist() == [1.0, 0.0]
    assert fast_image(img, classes).entries[classes.index[MAN]][1].tolist() == [1.0, 1.0]
    img.detections = [(MAN, 0.5, whole), (MAN, 0.5, inside)]
    assert fast_image(img, classes, 'fp-first').entries[classes.index[MAN]][1].tolist() == [1.0, 1.0]
    assert fast_image(img, classes).entries[classes.index[MAN]][1].tolist() == [1.0, 0.0]


def test_gt_without_detections_in_one_image_still_counts(classes):
    a, b = square(0, 0, 5, 5), square(5, 5, 10, 10)
    img1 = LImage(H, W, [LObject(MAN, norm_box(a), False, a)], detections=[(MAN, 0.8, a)])
    img2 = LImage(H, W, [LObject(MAN, norm_box(b), False, b)])
    res = run([img1, img2], classes)
    assert res.counted_gt[classes.index[MAN]] == 2
    assert ap_of(res, classes, MAN) == 0.5


@pytest.mark.parametrize('ties', ['official', 'fp-first'])
def test_result_does_not_depend_on_the_order_results_arrive_in(classes, ties):
    """Workers return images in any order: the official order sorts them by ImageID, FP-first needs no order."""
    rng = np.random.default_rng(7)
    images = [random_image(rng) for _ in range(60)]
    a = fast_map(images, classes, ties)
    acc = APAccumulator(classes, ties)
    for k in reversed(range(len(images))):
        gt, dets = to_fast(images[k], classes)
        acc.add(evaluate_image(gt, dets, classes, images[k].height, images[k].width, ties), f'{k:05d}')
    b = acc.result()
    assert a.mean_ap == b.mean_ap
    np.testing.assert_array_equal(a.ap, b.ap)


def test_detections_beyond_ten_thousand_per_class_are_cut(classes):
    man = square(0, 0, 5, 5)
    gt = GroundTruth([MAN], np.array([[0, 0, 0.5, 0.5]]), np.array([False]), [rle(man)])
    n = 10_005
    masks = [rle(square(6, 6, 9, 9))] * (n - 1) + [rle(man)]
    scores = np.r_[np.full(n - 1, 0.5), 0.1]
    out = evaluate_image(gt, Detections(np.full(n, classes.index[MAN]), scores, masks), classes, H, W)
    assert out.detections[classes.index[MAN]] == 10_000
    assert out.entries[classes.index[MAN]][1].sum() == 0  # the true positive was the 10,005th


def test_outcomes_account_for_every_scored_entry(classes):
    """Per detection outcomes (for calibration): the TP and FP detections of each class are exactly the
    class's scored entries, each group-of GT hit gives one TP detection (the best inside it), and asking
    for outcomes changes nothing else."""
    from util.metric.rules import FALSE_POSITIVE, IGNORED, NOT_SCORED, TRUE_POSITIVE
    rng = np.random.default_rng(7)
    seen = set()
    for k in range(600):
        img = random_image(rng)
        gt, dets = to_fast(img, classes)
        plain = evaluate_image(gt, dets, classes, img.height, img.width)
        told = evaluate_image(gt, dets, classes, img.height, img.width, outcomes=True)
        if plain is None:
            assert told is None
            continue
        assert plain.outcomes is None and told.outcomes.shape == (len(dets.scores),)
        assert {c: (s.tolist(), t.tolist()) for c, (s, t) in plain.entries.items()} == \
            {c: (s.tolist(), t.tolist()) for c, (s, t) in told.entries.items()}
        codes = told.outcomes
        seen.update(codes.tolist())
        for c, (s, t) in told.entries.items():
            mine = (dets.classes == c)
            tp = np.sort(dets.scores[mine & (codes == TRUE_POSITIVE)])
            fp = np.sort(dets.scores[mine & (codes == FALSE_POSITIVE)])
            assert tp.tolist() == np.sort(s[t == 1]).tolist(), k
            assert fp.tolist() == np.sort(s[t == 0]).tolist(), k
        unscored = set(dets.classes[codes == NOT_SCORED].tolist())
        assert not any((dets.classes == c)[codes != NOT_SCORED].any() and c not in told.entries
                       for c in unscored)
    assert seen == {NOT_SCORED, IGNORED, FALSE_POSITIVE, TRUE_POSITIVE}    # the cases exercise every code
