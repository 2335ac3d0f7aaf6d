"""The four greedy matching stages of ``rules`` for every class of one image in one compiled call.

A search scores hundreds of settings on the same images, so the metric's per-image cost is its cost.
Matching class by class with numpy spends most of it on calls over arrays of a few elements; this does
the same arithmetic (float32 mask ratios, float64 box ratios, the same operation order, first-maximum
argmax with NaN first as numpy's, numpy's division by zero) as one loop, compiled by numba (cached
beside this file).

    match_image(segments, slots, scores, det_boxes, det_areas, inter, member_offsets, member_rows,
                gt_boxes, gt_areas, gt_group_of) -> (tp, valid, group_segment, group_score, group_row)

The detections come sorted: grouped by class (``segments``: each class's [start, end) of the rows),
best first within a class. ``slots[s]``: the row of the class in the members table (``member_offsets``,
``member_rows``: the GT rows, in the reference's GT order, that count for it), -1 when no GT counts for
it. ``inter``: pixels each detection shares with each GT mask (GT order). Out: per row, TP and valid
(not ignored); per hit group-of GT (class by class, GT order), its class's segment, best score and the
row that holds it. Rules and their sources: ``rules``' docstring.
"""
from __future__ import annotations

import numba
import numpy as np

MATCH_THRESHOLD = 0.5
MASK_EPS = np.float32(1e-7)         # np_mask_ops.EPSILON, applied in float32

_MASK_IOU, _MASK_IOA, _BOX_IOU, _BOX_IOA = 0, 1, 2, 3


@numba.njit(cache=True, nogil=True, error_model='numpy')
def _ratio(stage, r, j, det_area32, det_boxes, inter, gt_boxes, gt_areas):  # pragma: no cover  (compiled)
    """Detection row r against GT row j: the stage's overlap, as np_mask_ops / np_box_ops compute it."""
    if stage == _MASK_IOU:
        i32 = np.float32(inter[r, j])
        union = det_area32 + np.float32(gt_areas[j]) - i32
        return np.float64(i32 / max(union, MASK_EPS))
    if stage == _MASK_IOA:
        return np.float64(np.float32(inter[r, j]) / (det_area32 + MASK_EPS))
    h = max(0.0, min(det_boxes[r, 2], gt_boxes[j, 2]) - max(det_boxes[r, 0], gt_boxes[j, 0]))
    w = max(0.0, min(det_boxes[r, 3], gt_boxes[j, 3]) - max(det_boxes[r, 1], gt_boxes[j, 1]))
    shared = h * w
    det_area = (det_boxes[r, 2] - det_boxes[r, 0]) * (det_boxes[r, 3] - det_boxes[r, 1])
    if stage == _BOX_IOU:
        gt_area = (gt_boxes[j, 2] - gt_boxes[j, 0]) * (gt_boxes[j, 3] - gt_boxes[j, 1])
        return shared / (det_area + gt_area - shared)
    return shared / det_area


@numba.njit(cache=True, nogil=True, error_model='numpy')
def _stage(stage, a, b, cols, n_cols, scores, det_areas, det_boxes, inter, gt_boxes, gt_areas,
           tp, to_box, to_group, taken, best_score, best_row):  # pragma: no cover  (compiled)
    """One stage over rows [a, b) and GT rows ``cols[:n_cols]``: each unflagged row looks at its best GT
    (first maximum; a NaN counts as the maximum, the first one, as in numpy's argmax)."""
    for c in range(n_cols):
        taken[c] = False
        best_score[c] = 0.0
        best_row[c] = -1
    for r in range(a, b):
        area32 = np.float32(det_areas[r])
        g = -1
        v = 0.0
        for c in range(n_cols):
            x = _ratio(stage, r, cols[c], area32, det_boxes, inter, gt_boxes, gt_areas)
            if g < 0 or x > v or (np.isnan(x) and not np.isnan(v)):
                g = c
                v = x
            if np.isnan(v):
                break
        if tp[r] or to_group[r] or not v >= MATCH_THRESHOLD:
            continue
        if stage == _MASK_IOU or stage == _BOX_IOU:
            if not taken[g]:
                taken[g] = True
                tp[r] = True
                to_box[r] = stage == _BOX_IOU
        else:
            to_group[r] = True
            if scores[r] > best_score[g]:
                best_score[g] = scores[r]
                best_row[g] = r


@numba.njit(cache=True, nogil=True, error_model='numpy')
def _match(segments, slots, scores, det_boxes, det_areas, inter, member_offsets, member_rows, gt_boxes,
           gt_areas, gt_group_of, tp, to_box, to_group, group_segment, group_score, group_row):  # pragma: no cover
    n_gt = gt_areas.shape[0]
    cols = np.empty(n_gt, np.int64)
    taken = np.empty(n_gt, np.bool_)
    best_score = np.empty(n_gt, np.float64)
    best_row = np.empty(n_gt, np.int64)
    n_group = 0
    for s in range(slots.shape[0]):
        slot = slots[s]
        if slot < 0:
            continue
        a, b = segments[s], segments[s + 1]
        m0, m1 = member_offsets[slot], member_offsets[slot + 1]
        for stage in range(4):
            masked = stage == _MASK_IOU or stage == _MASK_IOA
            group = stage == _MASK_IOA or stage == _BOX_IOA
            n_cols = 0
            for q in range(m0, m1):
                j = member_rows[q]
                if (gt_areas[j] > 0) == masked and gt_group_of[j] == group:
                    cols[n_cols] = j
                    n_cols += 1
            if n_cols == 0:
                continue
            _stage(stage, a, b, cols, n_cols, scores, det_areas, det_boxes, inter, gt_boxes, gt_areas,
                   tp, to_box, to_group, taken, best_score, best_row)
            if stage == _MASK_IOA:
                for c in range(n_cols):
                    if best_score[c] > 0:
                        group_segment[n_group] = s
                        group_score[n_group] = best_score[c]
                        group_row[n_group] = best_row[c]
                        n_group += 1
    return n_group


def match_image(segments, slots, scores, det_boxes, det_areas, inter, member_offsets, member_rows,
                gt_boxes, gt_areas, gt_group_of):
    """See the module docstring. Rows of a class without GT (slot -1) stay unmatched and valid."""
    n = len(scores)
    tp, to_box, to_group = np.zeros(n, np.bool_), np.zeros(n, np.bool_), np.zeros(n, np.bool_)
    room = len(member_rows)
    group_segment, group_score, group_row = np.empty(room, np.int64), np.empty(room), np.empty(room, np.int64)
    k = _match(np.asarray(segments, np.int64), np.asarray(slots, np.int64), np.asarray(scores, np.float64),
               np.ascontiguousarray(det_boxes, np.float64), np.asarray(det_areas, np.int64),
               np.ascontiguousarray(inter, np.int64), np.asarray(member_offsets, np.int64),
               np.asarray(member_rows, np.int64), np.ascontiguousarray(gt_boxes, np.float64),
               np.asarray(gt_areas, np.int64), np.asarray(gt_group_of, np.bool_),
               tp, to_box, to_group, group_segment, group_score, group_row)
    return tp, ~to_box & ~to_group, group_segment[:k], group_score[:k], group_row[:k]
