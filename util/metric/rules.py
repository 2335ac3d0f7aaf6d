"""The challenge metric's rules (official TF Object Detection API scorer, instance segmentation), without I/O.

One image's ground truth and detections go in; per-class scored entries come out; the entries of all
images become per-class AP and the mAP. Masks are COCO RLEs (bytes counts) at the image size; areas, tight
boxes and intersections are exact pixel counts read off their runs (``util.common.rle_runs``, compiled, no
dense mask), then turned into the reference's exact float32 / float64 ratios.

    Classes(mids, hierarchy)            the evaluated class list and its expansions up / down the hierarchy
    GroundTruth, Detections             one image's inputs
    mask_features(rles, gt, h, w)       -> MaskFeatures: all the metric reads of the masks (cacheable rows)
    runs_features(runs, gt, h, w)       the same of masks read as runs (``mask_codec.decode_runs_batch``)
    expand_ground_truth(labels, image_labels, classes)   -> GT rows per class, evaluatable classes
    prepare_truth(gt, classes)          -> PreparedTruth: all an image's scoring needs of its GT (kept by
                                           ``GroundTruth.prepared``: a session scores the same GT again)
    evaluate_image(gt, dets, classes)   -> ImageResult: scored entries and counted GT per class (or None);
                                           outcomes=True: also TP / FP / ignored / not scored per detection;
                                           the matching of all its classes is one compiled call (``matching``)
    precision_recall(scores, tp, n)     VOC curves, equal scores in the reference's order or FP-first (below)
    average_precision(precision, recall)   VOC all-points AP
    APAccumulator                       sums ImageResults over images -> EvalResult (per-class AP, mAP)

The rules, in the order the reference applies them (object_detection_evaluation.py and
per_image_evaluation.py of tensorflow/models, the command-line path oid_challenge_evaluation.py):
- GT rows count for their label and every ancestor; a positive image-level label adds its ancestors, a
  negative one its descendants. Evaluatable classes = expanded image-level labels + expanded GT classes;
  detections of other classes are dropped; an image without any GT is ignored.
- A GT whose mask is absent or empty is box-only. Counted GT per class = GT with a non-empty mask, group-of
  or not (the command-line path's group-of weight is 1.0).
- A detection's box is the tight box of its mask, normalised ([min, max + 1) / size); empty masks are
  dropped, and so are scores <= -10 (the reference's NMS score floor). Per image and class, detections are
  sorted by score and cut at 10,000.
- Four greedy stages; a detection looks only at its best GT (first one on exact ties), a taken best GT
  leaves it unmatched for that stage: (a) mask IoU >= 0.5 with non-group-of masked GT -> TP; (b) mask IoA
  >= 0.5 with group-of masked GT -> ignored, and each such GT adds one TP entry at the best score that hit
  it (only when that score is > 0); (c) box IoU >= 0.5 with box-only non-group-of GT -> the first detection
  is ignored, later ones stay FP; (d) box IoA >= 0.5 with box-only group-of GT -> ignored.
- AP = VOC all-points area; mAP = mean over classes with counted GT (no detections -> AP 0).

Equal scores (``ties``; submissions often round scores to 2-4 decimals, so they matter):
- ``'official'`` (the default everywhere): the reference's own order, rebuilt. Per image and class,
  numpy's default argsort of the scores in input order, reversed, decides which tied detection is matched
  first; per class, the images' entries in ImageID order, argsorted the same way, give the AP. On the same
  numpy build this is the leaderboard's number to the last digit, also with heavy ties (numpy's unstable
  sort may order ties differently on another build, as it would for Google's scorer).
- ``'fp-first'`` (opt-in): deterministic on any build. Within an image and class equal scores keep their
  input order (a stable sort); in the AP, false positives rank before true positives: the lowest AP any
  order of the tie could give, independent of image order, worker count and numpy.
Ties in the best-GT choice go to the first GT in the reference's merge order: box coordinates (XMin, XMax,
YMin, YMax), then IsGroupOf, then file order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..common.hierarchy import ClassIndex
from ..common.mask_codec import rle_areas
from ..common.rle_runs import Runs, overlap_pixels, runs_of
from .matching import match_image

MAX_DETECTIONS_PER_CLASS = 10_000
SCORE_FLOOR = -10.0                 # the reference's NMS keeps scores > -10 only
TIES = ('official', 'fp-first')     # the first is the default


class Classes(ClassIndex):
    """The evaluated class list (MIDs, in report order) and each label's expansions as class indices
    (``util.common.hierarchy.ClassIndex``: ``up`` for GT rows and positive labels, ``down`` for negative
    ones). Labels outside the hierarchy expand to themselves only; a class list that is a subset of the
    hierarchy evaluates that subset."""


@dataclass
class GroundTruth:
    """One image's GT objects (box rows after the mask join, before expansion) and verified labels."""
    labels: list                    # MID per object
    boxes: np.ndarray               # (N, 4) float64, normalised [ymin, xmin, ymax, xmax]
    group_of: np.ndarray            # (N,) bool
    masks: list                     # COCO RLE (bytes counts) at image size, or None (box-only)
    image_labels: list = field(default_factory=list)   # [(mid, verified_present: bool)]
    _runs: tuple | None = field(default=None, repr=False, compare=False)
    _prepared: tuple | None = field(default=None, repr=False, compare=False)

    def prepared(self, classes) -> PreparedTruth:
        """``prepare_truth`` of this GT for ``classes``, made once and kept (as the runs are)."""
        if self._prepared is None or self._prepared[0] is not classes:
            self._prepared = (classes, prepare_truth(self, classes))
        return self._prepared[1]

    def mask_runs(self, height: int, width: int):
        """(rows with a mask, their ``rle_runs.Runs``): read once, then kept with the GT (a metric session
        checks many prediction sets against the same GT)."""
        if self._runs is None:
            cols = [j for j, m in enumerate(self.masks) if m is not None]
            self._runs = (cols, runs_of(_counts([self.masks[j] for j in cols], height, width, 'ground-truth'),
                                        height))
        return self._runs


@dataclass
class Detections:
    """One image's detections: class indices into ``Classes``, scores, masks at the image size. Instead
    of the masks, their ``MaskFeatures`` may be given (all the metric reads of a mask), e.g. from a cache
    of masks already seen; the result is the same."""
    classes: np.ndarray             # (M,) int
    scores: np.ndarray              # (M,) float64
    masks: list | None              # COCO RLE (bytes counts); None when ``features`` are given
    features: MaskFeatures | None = None

    @classmethod
    def empty(cls):
        return cls(np.zeros(0, np.int64), np.zeros(0, np.float64), [])

    def take(self, rows) -> Detections:
        """The detections at positions ``rows`` (repeats allowed), with their masks or features."""
        rows = np.asarray(rows, np.int64)
        masks = None if self.masks is None else [self.masks[k] for k in rows.tolist()]
        features = None if self.features is None else self.features.take(rows)
        return Detections(self.classes[rows], self.scores[rows], masks, features)


@dataclass
class MaskFeatures:
    """What the metric needs of each detection mask, against one image's GT: its area (pixels), tight box
    (normalised [ymin, xmin, ymax, xmax]: [first, last + 1) pixel over the image size) and its intersection (pixels) with every GT mask, in the GT's own row
    order (0 for box-only GT). Each row depends on that mask and the GT alone, so rows can be cached."""
    areas: np.ndarray               # (M,) int64
    boxes: np.ndarray               # (M, 4) float64
    overlaps: np.ndarray            # (M, N GT rows) int64

    def take(self, rows) -> MaskFeatures:
        return MaskFeatures(self.areas[rows], self.boxes[rows], self.overlaps[rows])


def mask_features(rles: list, gt: GroundTruth, height: int, width: int) -> MaskFeatures:
    """``MaskFeatures`` of checked RLEs at the image size, from their runs (``rle_runs``): exact pixel
    counts, no dense mask, no pycocotools call. An empty mask has area 0, a zero box, no intersections."""
    return runs_features(runs_of(_counts(rles, height, width, 'detection'), height), gt, height, width)


def runs_features(det: Runs, gt: GroundTruth, height: int, width: int) -> MaskFeatures:
    """``mask_features`` of masks already read as runs (``mask_codec.decode_runs_batch``)."""
    overlaps = np.zeros((len(det.areas), len(gt.masks)), np.int64)
    if len(det.areas):
        cols, truth = gt.mask_runs(height, width)
        if cols:
            overlaps[:, cols] = overlap_pixels(det, truth)
    x0, y0, x1, y1 = det.boxes.T.astype(np.float64)
    boxes = np.stack([y0 / height, x0 / width, (y1 + 1) / height, (x1 + 1) / width], axis=1)
    boxes[det.areas == 0] = 0.0
    return MaskFeatures(det.areas, boxes, overlaps)


def _counts(rles: list, height: int, width: int, what: str) -> list:
    """The compressed counts (bytes) of RLEs that must be ``height`` x ``width``."""
    out = []
    for r in rles:
        if [int(v) for v in r['size']] != [height, width]:
            raise ValueError(f'a {what} mask is {r["size"][0]}x{r["size"][1]}, the image is {height}x{width}')
        c = r['counts']
        out.append(c.encode('ascii') if isinstance(c, str) else c)
    return out


# What the metric made of each detection (``ImageResult.outcomes``), e.g. for score calibration.
NOT_SCORED = -2     # class not evaluatable for the image, score at the floor, empty mask, over 100 per class
IGNORED = -1        # inside a group-of GT (not its best), or matched to a box-only GT
FALSE_POSITIVE = 0
TRUE_POSITIVE = 1   # matched a GT; for a group-of GT: the best-scored detection inside it


@dataclass
class ImageResult:
    """Per class: scored entries (score, 1.0 = TP / 0.0 = FP), counted GT, detections kept; with
    ``evaluate_image(..., outcomes=True)`` also each input detection's outcome (codes above)."""
    entries: dict                   # class -> (scores float64, tp float64)
    counted_gt: dict                # class -> int
    detections: dict                # class -> int
    outcomes: np.ndarray | None = None      # (M,) int8, in the input detections' order


# ---- one image ----------------------------------------------------------------------------------
def gt_order(gt: GroundTruth) -> np.ndarray:
    """The reference's GT order (its outer merge sorts by XMin, XMax, YMin, YMax, IsGroupOf)."""
    b = gt.boxes
    return np.lexsort((np.arange(len(b)), gt.group_of, b[:, 2], b[:, 0], b[:, 3], b[:, 1]))


def expand_ground_truth(labels: list, image_labels: list, classes: Classes):
    """GT rows and image-level labels up/down the hierarchy.

    Returns ``members`` (class -> indices of the GT rows that count for it, in row order) and the set of
    evaluatable classes (expanded GT classes + expanded verified labels, positive and negative).
    """
    members: dict[int, list[int]] = {}
    for j, mid in enumerate(labels):
        for c in classes.up(mid):
            members.setdefault(c, []).append(j)
    evaluatable = set(members)
    for mid, positive in image_labels:
        evaluatable.update(classes.up(mid) if positive else classes.down(mid))
    return members, evaluatable


@dataclass
class PreparedTruth:
    """What scoring an image needs of its GT against a class list, whatever the detections: GT rows in the
    reference's order (``order``) with their boxes, group-of flags and mask areas (0: box-only); per class
    the rows (positions in that order) that count for it, as ``matching``'s members table (``slot``: class
    -> its row); the evaluatable classes (a mask over the class list) and the counted GT per class."""
    order: np.ndarray
    boxes: np.ndarray
    group_of: np.ndarray
    areas: np.ndarray
    slot: dict
    member_offsets: np.ndarray
    member_rows: np.ndarray
    evaluatable: np.ndarray
    counted: dict


def prepare_truth(gt: GroundTruth, classes: Classes) -> PreparedTruth:
    order = gt_order(gt)
    masks = [gt.masks[j] for j in order]
    masked = [j for j, m in enumerate(masks) if m is not None]
    areas = np.zeros(len(masks), np.int64)
    areas[masked] = rle_areas([masks[j] for j in masked])
    members, evaluatable = expand_ground_truth([gt.labels[j] for j in order], gt.image_labels, classes)
    counted = {c: n for c, js in members.items() if (n := int(np.count_nonzero(areas[js])))}
    listed = sorted(members)
    offsets = np.cumsum([0] + [len(members[c]) for c in listed]).astype(np.int64)
    rows = np.asarray([j for c in listed for j in members[c]], np.int64)
    mask = np.zeros(len(classes), bool)
    mask[sorted(evaluatable)] = True
    return PreparedTruth(order, gt.boxes[order], gt.group_of[order], areas, {c: k for k, c in enumerate(listed)},
                         offsets, rows, mask, counted)


def _kept_detections(dets: Detections, evaluatable: np.ndarray, gt: GroundTruth, height, width):
    """Positions and ``MaskFeatures`` of the detections that take part: evaluatable class, score above
    the floor, non-empty mask (features computed here, for those only, when the detections bring masks)."""
    classes = np.asarray(dets.classes, np.int64)
    keep = np.flatnonzero(evaluatable[classes] & (np.asarray(dets.scores, np.float64) > SCORE_FLOOR))
    if dets.features is not None:
        features = dets.features.take(keep)
    else:
        features = mask_features([dets.masks[k] for k in keep.tolist()], gt, height, width)
    nonempty = np.flatnonzero(features.areas > 0)
    return keep[nonempty], features.take(nonempty)


def _class_order(classes: np.ndarray, scores: np.ndarray, ties: str):
    """Positions grouped by class (ascending), highest score first within a class, at most
    ``MAX_DETECTIONS_PER_CLASS`` of each; and the groups' bounds. Equal scores of a class: in the order of
    the reference's argsort of that class's scores in input order, reversed (``'official'``), or in
    input order (``'fp-first'``)."""
    order = np.lexsort((-scores, classes))                       # stable: equal scores in input order
    c, s = classes[order], scores[order]
    if ties == 'official':
        tied = (c[1:] == c[:-1]) & (s[1:] == s[:-1])
        for cls in np.unique(c[1:][tied]).tolist():
            rows = np.flatnonzero(classes == cls)
            order[c == cls] = rows[np.argsort(scores[rows])[::-1]]
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    sizes = np.diff(np.r_[starts, len(c)])
    rank = np.arange(len(c)) - np.repeat(starts, sizes)
    return order[rank < MAX_DETECTIONS_PER_CLASS], np.r_[0, np.cumsum(np.minimum(sizes, MAX_DETECTIONS_PER_CLASS))]


def check_ties(ties: str) -> str:
    if ties not in TIES:
        raise ValueError(f'ties must be one of {TIES}, not {ties!r}')
    return ties


def evaluate_image(gt: GroundTruth, dets: Detections, classes: Classes,
                   height: int | None = None, width: int | None = None,
                   ties: str = 'official', outcomes: bool = False) -> ImageResult | None:
    """One image -> ImageResult, or None when it has no GT at all (ignored).

    ``height``/``width`` (the image size) are needed only when there are detections. ``outcomes``: also
    say what became of every detection (``ImageResult.outcomes``; the scores are unchanged by it).
    """
    check_ties(ties)
    if not gt.labels and not gt.image_labels:
        return None
    truth = gt.prepared(classes)
    codes = np.full(len(dets.scores), NOT_SCORED, np.int8) if outcomes else None
    keep, features = _kept_detections(dets, truth.evaluatable, gt, height, width)
    if not keep.size:
        return ImageResult({}, dict(truth.counted), {}, codes)
    det_classes, det_scores = np.asarray(dets.classes, np.int64)[keep], np.asarray(dets.scores, np.float64)[keep]
    order, bounds = _class_order(det_classes, det_scores, ties)
    scores = det_scores[order]
    listed = det_classes[order[bounds[:-1]]].tolist()
    tp, valid, group_segment, group_score, group_row = match_image(
        bounds, [truth.slot.get(c, -1) for c in listed], scores, features.boxes[order], features.areas[order],
        features.overlaps[order][:, truth.order], truth.member_offsets, truth.member_rows, truth.boxes,
        truth.areas, truth.group_of)
    # Entries per class: its valid rows best first, then one TP per group-of GT it hit, in GT order.
    segment = np.repeat(np.arange(len(listed)), np.diff(bounds))
    entry_segment = np.concatenate([segment[valid], group_segment])
    by_segment = np.argsort(entry_segment, kind='stable')
    entry_scores = np.concatenate([scores[valid], group_score])[by_segment]
    entry_tp = np.concatenate([tp[valid].astype(np.float64), np.ones(len(group_score))])[by_segment]
    ends = np.cumsum(np.bincount(entry_segment, minlength=len(listed))).tolist()
    entries = {c: (entry_scores[a:b], entry_tp[a:b]) for c, a, b in zip(listed, [0] + ends[:-1], ends)}
    kept = dict(zip(listed, np.diff(bounds).tolist()))
    if outcomes:
        row_codes = np.where(valid, np.where(tp, TRUE_POSITIVE, FALSE_POSITIVE), IGNORED).astype(np.int8)
        row_codes[group_row] = TRUE_POSITIVE
        codes[keep[order]] = row_codes
    return ImageResult(entries, dict(truth.counted), kept, codes)


# ---- AP ------------------------------------------------------------------------------------------
def precision_recall(scores: np.ndarray, tp: np.ndarray, num_gt: float, ties: str = 'official'):
    """VOC precision and recall; equal scores in the reference's argsort order of ``scores`` as given, or
    with ``ties='fp-first'`` false positives first (independent of the entries' order)."""
    order = np.argsort(scores)[::-1] if ties == 'official' else np.lexsort((tp, -scores))
    tp_sorted = tp[order].astype(np.float64)
    cum_tp = np.cumsum(tp_sorted)
    cum_fp = np.cumsum((tp_sorted <= 0).astype(np.float64))
    return cum_tp / (cum_tp + cum_fp), cum_tp / num_gt


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """Area under the monotone precision envelope, at every recall change (VOC all points)."""
    if not precision.size:
        return 0.0
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[idx] - recall[idx - 1]) * precision[idx]))


@dataclass
class EvalResult:
    """Per class (``Classes`` order): AP (NaN without counted GT), counted GT, detections; and the mAP."""
    mids: list
    ap: np.ndarray
    counted_gt: np.ndarray
    detections: np.ndarray
    curves: dict                    # class -> (precision, recall)
    images_evaluated: int
    images_ignored: int

    @property
    def mean_ap(self) -> float:
        valid = ~np.isnan(self.ap)
        return float(np.nanmean(self.ap)) if valid.any() else float('nan')


class APAccumulator:
    """Collects ImageResults in any order; the result does not depend on that order. With
    ``ties='official'`` (the default) each result comes with its image id, and the entries are put in
    ImageID order (the reference's) before the AP."""

    def __init__(self, classes: Classes, ties: str = 'official'):
        self.classes, self.ties = classes, check_ties(ties)
        n = len(classes)
        self.scores = [[] for _ in range(n)]
        self.tp = [[] for _ in range(n)]
        self.image_ids = [[] for _ in range(n)]
        self.counted_gt = np.zeros(n, np.int64)
        self.detections = np.zeros(n, np.int64)
        self.images_evaluated = 0
        self.images_ignored = 0

    def add(self, result: ImageResult | None, image_id: str | None = None) -> None:
        if result is None:
            self.images_ignored += 1
            return
        if self.ties == 'official' and image_id is None:
            raise ValueError("ties='official' needs each result's image id")
        self.images_evaluated += 1
        for c, (s, t) in result.entries.items():
            self.scores[c].append(s)
            self.tp[c].append(t)
            self.image_ids[c].append(image_id)
        for c, n in result.counted_gt.items():
            self.counted_gt[c] += n
        for c, n in result.detections.items():
            self.detections[c] += n

    def _entries(self, c: int):
        parts = range(len(self.scores[c]))
        if self.ties == 'official':
            parts = sorted(parts, key=lambda k: self.image_ids[c][k])
        scores = np.concatenate([self.scores[c][k] for k in parts]) if parts else np.zeros(0)
        tp = np.concatenate([self.tp[c][k] for k in parts]) if parts else np.zeros(0)
        return scores, tp

    def result(self) -> EvalResult:
        ap = np.full(len(self.classes), np.nan)
        curves = {}
        for c in np.flatnonzero(self.counted_gt > 0).tolist():
            scores, tp = self._entries(c)
            precision, recall = precision_recall(scores, tp, float(self.counted_gt[c]), self.ties)
            ap[c] = average_precision(precision, recall)
            curves[c] = (precision, recall)
        return EvalResult(list(self.classes.mids), ap, self.counted_gt.copy(), self.detections.copy(),
                          curves, self.images_evaluated, self.images_ignored)
