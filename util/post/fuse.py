"""Fusion of instance-segmentation submissions (Kaggle format) from any codebase, per image and label.

A submission from detectron2 and one from this repo fuse as well as two of ours: only the CSV format is
shared. Per image, the instances of every input are pooled per label and clustered; each cluster becomes
one instance. Three methods:

    wbf   weighted boxes fusion (ensemble-boxes) on the masks' tight boxes. Box clusters, scores per
          ``conf_type``; the library returns no membership, so each input instance is given to the fused
          box it overlaps most with box IoU > ``iou_thr`` (the library's own matching rule; a fused box
          that gets none takes the instance it overlaps most; an instance that no final fused box
          overlaps enough, as the library's running averages drifted, adds to no mask). The fused mask is
          the average of the members' masks, weighted by score x input weight (as WBF weights the box
          corners), > mask_thr, computed on the compressed RLEs (``average_mask``).
    vote  the mask-native twin of wbf: clusters by greedy mask IoU >= ``iou_thr`` (best score first, as
          mask NMS), score = sum over inputs of weight x (the input's best score in the cluster, 0 if it
          has none) / sum of weights, mask = the same weighted average (a weighted majority vote at 0.5).
          It differs from wbf where boxes mislead: thin, diagonal or nested objects whose boxes overlap
          while their masks do not (or the reverse).
    nms   the baseline: greedy mask NMS per label over the pooled instances (``mask_nms.nms_detections``),
          scores multiplied by weight / max weight, masks untouched.

Why normalised boxes: ``weighted_boxes_fusion`` clips coordinates to [0, 1] silently, so pixel boxes
would collapse; boxes are divided by the image's width and height (IoU does not change under a per-axis
scale, so portrait images cluster the same) and multiplied back.

``conf_type`` (ensemble-boxes 1.0.9, scores s in [0, 1], weights w > 0):
    box_and_model_avg        (default) weighted mean score x (weights of the inputs present / all): <= 1
    absent_model_aware_avg   sum(w s) / (weights of the members + weights of the absent inputs): <= 1
    max                      max(w s) / max(w): <= 1
    avg                      sum(w s) / sum(w), or the mean when a cluster has more boxes than inputs:
                             EXCEEDS 1 when weights differ and the heaviest input puts several boxes into
                             one cluster (weights 2, 1 and two boxes of score 1 give 4/3); such scores are
                             clipped to 1, as a submission must stay in [0, 1].
Instances with score 0 (zero weight in every average) or empty masks (no box) are dropped by wbf and
vote. A submission fused with itself is itself (same masks, scores s under every conf_type, to the
library's float32 precision) when no two same-label instances of it overlap beyond ``iou_thr``; such
instances are merged, as in any input. Scores are written with 6 significant digits.

Files: each input is indexed in one streaming pass (byte offset of every ImageID's row; header, ids and
sizes checked), then rows are read per chunk of images, in worker processes (``jobs``), and written in
order through ``SubmissionWriter`` (atomic): the output bytes do not depend on ``jobs``. Output order:
the first input's images, then those only in later inputs (in their order). An image missing from an
input means that input predicted nothing there; the same image with different sizes in two inputs is an
error naming both. Rows are read with the strict reader's functions and masks decoded with
``mask_codec`` (errors name file:line: image: detection).

    fuse_image(dets_per_input, width, height, options, where)  -> [(label, score, EncodedMask)]
    wbf_boxes(boxes, scores, labels, width, height, ...)       -> pixel boxes, scores, labels (the library's)
    index_submission(path)                                     -> {ImageID: Entry}
    fuse_submissions(inputs, out, options, jobs, progress)     -> FuseStats

    python -m util.post.fuse A.csv B.csv [...] --out FUSED.csv [--method wbf|vote|nms] [--weights 1 2 ...]
        [--iou-thr 0.55] [--conf-type box_and_model_avg] [--skip-box-thr 0] [--max-per-img N]
        [--mask-thr 0.5] [--jobs N] [--no-progress]
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace

import numpy as np
from ensemble_boxes import weighted_boxes_fusion
from pycocotools import mask as mask_utils

from ..common.cli import add_progress_flag, run
from ..common.cli import progress as progress_bar
from ..common.errors import DataError
from ..common.mask_codec import decode_encoded_batch, rle_to_encoded, with_counts
from ..common.rle_runs import runs_of
from ..common.submission import (
    HEADER,
    SubmissionError,
    SubmissionWriter,
    format_prediction_string,
    parse_row,
    split_line,
)
from ..common.textio import open_text
from ..common.workers import start_worker
from .combine import cap_detections
from .mask_nms import MaskIoUs, greedy_suppress, mask_ious, nms_detections, vote_mask

METHODS = ('wbf', 'vote', 'nms')
CONF_TYPES = ('box_and_model_avg', 'absent_model_aware_avg', 'max', 'avg')
SCORE_FORMAT = '.6g'
MAX_COALITION = 12          # members up to which a fused mask may be computed on RLEs (2**n subsets) ...
MAX_MERGES = 40             # ... with at most this many masks merged; else decoded

Detection = tuple[str, float, str]


@dataclass(frozen=True)
class FuseOptions:
    """The CLI's flags. ``weights`` None means 1 per input."""
    method: str = 'wbf'
    weights: tuple[float, ...] | None = None
    iou_thr: float = 0.55
    conf_type: str = 'box_and_model_avg'
    skip_box_thr: float = 0.0
    max_per_img: int | None = None
    mask_thr: float = 0.5

    def checked(self, n_inputs: int) -> FuseOptions:
        """The options with one weight per input; a wrong value raises DataError."""
        weights = tuple(float(w) for w in self.weights) if self.weights is not None else (1.0,) * n_inputs
        if len(weights) != n_inputs:
            raise DataError(f'{len(weights)} weights for {n_inputs} inputs')
        if not all(np.isfinite(w) and w > 0 for w in weights):
            raise DataError(f'weights {list(weights)} must be positive numbers')
        if self.method not in METHODS:
            raise DataError(f'method {self.method!r} is not one of {", ".join(METHODS)}')
        if self.conf_type not in CONF_TYPES:
            raise DataError(f'conf_type {self.conf_type!r} is not one of {", ".join(CONF_TYPES)}')
        if not 0 < self.mask_thr < 1 or not 0 <= self.iou_thr <= 1:
            raise DataError(f'mask_thr {self.mask_thr} must be in (0, 1) and iou_thr {self.iou_thr} in [0, 1]')
        if self.max_per_img is not None and self.max_per_img < 1:
            raise DataError(f'max_per_img {self.max_per_img} must be at least 1')
        return replace(self, weights=weights)


# ---- masks -----------------------------------------------------------------------------------------
def tight_boxes(rles: list[dict]) -> np.ndarray:
    """Masks -> (N, 4) pixel boxes x0, y0, x1, y1 (x1 = last column + 1; all 0 for an empty mask), read
    off the runs (``rle_runs.runs_of``: the decoded mask's box, no dense mask)."""
    if not rles:
        return np.zeros((0, 4))
    counts = [r['counts'].encode('ascii') if isinstance(r['counts'], str) else r['counts'] for r in rles]
    runs = runs_of(counts, int(rles[0]['size'][0]))
    boxes = runs.boxes.astype(np.float64)
    boxes[:, 2:] += 1
    boxes[runs.areas == 0] = 0.0
    return boxes


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(M, 4) x (N, 4) boxes -> (M, N) IoU, computed as ensemble-boxes computes it."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.maximum(hi - lo, 0), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def minimal_coalitions(weights: np.ndarray, thr: float) -> list[int]:
    """Bit sets of the members whose weights exceed ``thr`` of the total while no smaller part of them
    does (members 0..n-1 are bits 0..n-1), in increasing order."""
    n = len(weights)
    if n <= 3:                                                       # the usual case, without numpy
        total = float(weights.sum())
        wins = {s for s in range(1, 1 << n) if sum(float(weights[k]) for k in range(n) if s >> k & 1) / total > thr}
        return sorted(s for s in wins if not any(s >> k & 1 and s & ~(1 << k) in wins for k in range(n)))
    sets = np.arange(1 << n)
    bits = (sets[:, None] >> np.arange(n)) & 1
    winning = bits @ weights / weights.sum() > thr
    minimal = winning.copy()
    for k in range(n):
        has_k = bits[:, k].astype(bool)
        minimal[has_k] &= ~winning[sets[has_k] & ~(1 << k)]
    return [int(s) for s in np.flatnonzero(minimal)]


def average_mask(rles: list[dict], weights, thr: float) -> dict:
    """Pixels where the weighted mean of the masks exceeds ``thr``.

    A pixel passes iff the members covering it weigh more than ``thr`` of the total, i.e. iff they include
    a minimal such coalition: the result is the union over those coalitions of their intersection, made
    with pycocotools' merge on the compressed RLEs (no mask decoded). When that takes more than
    MAX_MERGES merges the masks are decoded and averaged inside the cluster's box instead.
    """
    weights = np.asarray(weights, np.float64)
    n = len(rles)
    if n == 1:
        return rles[0]
    coalitions = minimal_coalitions(weights, thr) if n <= MAX_COALITION else None
    if coalitions is None or sum(s.bit_count() for s in coalitions) > MAX_MERGES:
        return vote_mask(rles, list(weights), thr)
    parts = []
    for s in coalitions:
        members = [rles[k] for k in range(n) if s >> k & 1]
        parts.append(members[0] if len(members) == 1 else mask_utils.merge(members, intersect=True))
    return parts[0] if len(parts) == 1 else mask_utils.merge(parts, intersect=False)


def _fused_encoding(encoded: list[str], rles: list[dict], weights, thr: float) -> str:
    """The fused mask as an EncodedMask; one member, or members that are all the same mask, pass as is."""
    if len(set(encoded)) == 1:
        return with_counts(encoded[0], rles[0])
    return rle_to_encoded(average_mask(rles, weights, thr))


# ---- one image ---------------------------------------------------------------------------------------
def wbf_boxes(boxes_list, scores_list, labels_list, width: int, height: int, weights, iou_thr: float,
              skip_box_thr: float, conf_type: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``weighted_boxes_fusion`` on pixel boxes: divided by the image size for the library, multiplied back.
    Returns the library's fused boxes (pixels), scores and labels, in its order (best score first)."""
    scale = np.array([width, height, width, height], np.float64)
    normalised = [np.asarray(b, np.float64).reshape(-1, 4) / scale for b in boxes_list]
    boxes, scores, labels = weighted_boxes_fusion(
        [b.tolist() for b in normalised], [list(map(float, s)) for s in scores_list],
        [list(map(int, lab)) for lab in labels_list], weights=list(weights), iou_thr=iou_thr,
        skip_box_thr=skip_box_thr, conf_type=conf_type)
    return np.asarray(boxes, np.float64).reshape(-1, 4) * scale, np.asarray(scores, np.float64), \
        np.asarray(labels).astype(np.int64)


@dataclass
class _Pool:
    """One image's instances of all inputs, decoded: the methods' common input."""
    labels: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    encoded: list[str] = field(default_factory=list)
    source: list[int] = field(default_factory=list)        # input index
    rles: list[dict] = field(default_factory=list)


def _pool(dets_per_input, width, height, where: Callable[[int], str], keep: Callable[[float], bool]) -> _Pool:
    pool = _Pool()
    for t, dets in enumerate(dets_per_input):
        rles = decode_encoded_batch([d[2] for d in dets], height, width,
                                    lambda k, t=t: f'{where(t)}: detection {k + 1}')
        for (label, score, enc), rle in zip(dets, rles):
            if keep(score):
                pool.labels.append(label)
                pool.scores.append(score)
                pool.encoded.append(enc)
                pool.source.append(t)
                pool.rles.append(rle)
    return pool


def _member_weights(pool: _Pool, members, weights) -> list[float]:
    return [pool.scores[i] * weights[pool.source[i]] for i in members]


def _fuse_wbf(pool: _Pool, width, height, o: FuseOptions) -> list[Detection]:
    boxes = tight_boxes(pool.rles)
    present = [i for i in range(len(boxes)) if boxes[i, 2] > boxes[i, 0] and boxes[i, 3] > boxes[i, 1]]
    label_ids = {lab: k for k, lab in enumerate(dict.fromkeys(pool.labels))}
    names = list(label_ids)
    inst_label = np.array([label_ids[pool.labels[i]] for i in present], np.int64)
    by_input = [[i for i in present if pool.source[i] == t] for t in range(len(o.weights))]
    fused, scores, labels = wbf_boxes(
        [boxes[idx] for idx in by_input], [[pool.scores[i] for i in idx] for idx in by_input],
        [[label_ids[pool.labels[i]] for i in idx] for idx in by_input], width, height, o.weights, o.iou_thr,
        o.skip_box_thr, o.conf_type)
    present = np.array(present, np.int64)
    members: list[list[int]] = [[] for _ in range(len(fused))]
    if len(fused):
        ious = box_iou(fused, boxes[present])                       # (fused, instances) of the image
        ious[labels[:, None] != inst_label[None, :]] = -1           # only within a label
        best = ious.argmax(axis=0)
        for j in np.flatnonzero(ious[best, np.arange(len(present))] > o.iou_thr):
            members[best[j]].append(int(present[j]))
        for f in range(len(fused)):
            if not members[f]:
                members[f].append(int(present[ious[f].argmax()]))
    out = []
    for f, idx in enumerate(members):
        enc = _fused_encoding([pool.encoded[i] for i in idx], [pool.rles[i] for i in idx],
                              _member_weights(pool, idx, o.weights), o.mask_thr)
        out.append((names[labels[f]], float(min(scores[f], 1.0)), enc))
    return out


def _fuse_vote(pool: _Pool, o: FuseOptions, memo: MaskIoUs | None = None) -> list[Detection]:
    groups: dict[str, list[int]] = {}
    for i, label in enumerate(pool.labels):
        groups.setdefault(label, []).append(i)
    total = sum(o.weights)
    fused = []
    for label, idx in groups.items():
        order = sorted(idx, key=lambda i: -pool.scores[i])
        rles = [pool.rles[i] for i in order]
        if len(order) > 1:
            ious = mask_ious(rles, [pool.encoded[i] for i in order], memo)
            clusters = [[order[a]] + [order[j] for j in hit] for a, hit in greedy_suppress(ious, o.iou_thr)]
        else:
            clusters = [order]
        for members in clusters:
            best = {}
            for i in members:
                best[pool.source[i]] = max(best.get(pool.source[i], 0.0), pool.scores[i])
            score = sum(o.weights[t] * s for t, s in best.items()) / total
            enc = _fused_encoding([pool.encoded[i] for i in members], [pool.rles[i] for i in members],
                                  _member_weights(pool, members, o.weights), o.mask_thr)
            fused.append((label, min(score, 1.0), enc))
    return sorted(fused, key=lambda d: -d[1])                    # stable: ties keep label, cluster order


def fuse_image(dets_per_input: list[list[Detection]], width: int, height: int, options: FuseOptions,
               where: Callable[[int], str] = lambda t: f'input {t + 1}', memo: MaskIoUs | None = None
               ) -> list[Detection]:
    """One image's detections of every input (a list per input, [] where it predicted nothing) -> fused
    detections, at most ``max_per_img``. ``options`` must be ``checked``; ``where(t)`` names input t's row
    (file:line: image) in errors; ``memo``: the image's remembered mask IoUs (vote and nms; a search's)."""
    o = options
    if o.method == 'nms':
        top = max(o.weights)
        pooled, origin = [], []
        for t, dets in enumerate(dets_per_input):
            for k, (label, score, enc) in enumerate(dets):
                if score >= o.skip_box_thr:
                    pooled.append((label, score * o.weights[t] / top, enc))
                    origin.append((t, k))
        out = nms_detections(pooled, height, width, o.iou_thr, False,
                             lambda i: f'{where(origin[i][0])}: detection {origin[i][1] + 1}', memo)[0]
    else:
        pool = _pool(dets_per_input, width, height, where, lambda s: s > 0 and s >= o.skip_box_thr)
        out = _fuse_wbf(pool, width, height, o) if o.method == 'wbf' else _fuse_vote(pool, o, memo)
    return cap_detections(out, o.max_per_img)


# ---- files -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """Where an image's row is in one input."""
    offset: int
    length: int
    line: int
    width: int
    height: int


def index_submission(path: str) -> dict[str, Entry]:
    """{ImageID: Entry} in file order, in one pass that never parses a PredictionString; the header, ids
    (once each) and sizes are checked as the strict reader checks them."""
    with open_text(path) as f:                  # gzip, encoding, BOM: the project's one way to open text
        first = f.readline()
    header = split_line(first, path, 1) if first else None
    if header != HEADER:
        raise SubmissionError(f'{path}:1: header {header!r}, expected {",".join(HEADER)}')
    entries: dict[str, Entry] = {}
    with open(path, 'rb') as f:
        offset = len(f.readline())
        for line, raw in enumerate(f, start=2):
            head = raw.split(b',', 3)
            try:
                fields = [p.decode('utf-8') for p in head[:3]] + [''] if len(head) == 4 else \
                    split_line(raw.decode('utf-8'), path, line)
            except UnicodeDecodeError:
                raise DataError(f'{path}:{line}: not UTF-8 text') from None
            row = parse_row(fields, path, line, parse=False)
            if row.image_id in entries:
                raise SubmissionError(f'{path}:{line}: image {row.image_id} appears twice (first on line '
                                      f'{entries[row.image_id].line})')
            entries[row.image_id] = Entry(offset, len(raw), line, row.width, row.height)
            offset += len(raw)
    return entries


Item = tuple[str, int, int, tuple[Entry | None, ...]]     # image id, width, height, its row in each input


def image_plan(paths: list[str], indexes: list[dict[str, Entry]]) -> list[Item]:
    """Every image of any input, in output order, with its row in each input; sizes must agree."""
    seen: dict[str, int] = {}                                # image -> first input that lists it
    for t, index in enumerate(indexes):
        for image_id, e in index.items():
            s = seen.setdefault(image_id, t)
            first = indexes[s][image_id]
            if (first.width, first.height) != (e.width, e.height):
                raise DataError(f'{paths[t]}:{e.line}: image {image_id} is {e.width}x{e.height}, but '
                                f'{paths[s]}:{first.line} has {first.width}x{first.height}')
    plan = []
    for image_id, s in seen.items():
        first = indexes[s][image_id]
        plan.append((image_id, first.width, first.height, tuple(index.get(image_id) for index in indexes)))
    return plan


def _read_row(f, path: str, e: Entry) -> list[Detection]:
    f.seek(e.offset)
    try:
        text = f.read(e.length).decode('utf-8')
    except UnicodeDecodeError:
        raise DataError(f'{path}:{e.line}: not UTF-8 text') from None
    return parse_row(split_line(text, path, e.line), path, e.line).detections


def fuse_chunk(job) -> list[tuple[str, int, int, str, int, int]]:
    """Worker: (paths, options, items) -> (image id, width, height, PredictionString, detections in, out)."""
    paths, options, items = job
    with ExitStack() as stack:
        files = [stack.enter_context(open(p, 'rb')) for p in paths]
        rows = []
        for image_id, width, height, entries in items:
            dets = [_read_row(f, p, e) if e is not None else [] for f, p, e in zip(files, paths, entries)]

            def where(t, image_id=image_id, entries=entries):
                return f'{paths[t]}:{entries[t].line}: image {image_id}'
            fused = fuse_image(dets, width, height, options, where)
            rows.append((image_id, width, height, format_prediction_string(fused, SCORE_FORMAT),
                         sum(map(len, dets)), len(fused)))
        return rows


@dataclass
class FuseStats:
    images: int = 0
    detections_in: int = 0
    detections_out: int = 0

    def __str__(self):
        return f'{self.images} images, {self.detections_in} input detections fused into {self.detections_out}'


def _in_order(pool, fn, jobs, ahead: int):
    """``map`` with at most ``ahead`` jobs in flight, results in submission order."""
    pending = deque()
    for job in jobs:
        pending.append(pool.submit(fn, job))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def fuse_submissions(inputs: list[str], out: str, options: FuseOptions = FuseOptions(), jobs: int = 1,
                     progress: bool = False, chunk: int = 8) -> FuseStats:
    """Fuse the submissions ``inputs`` into ``out`` (written atomically); see the module docstring."""
    options = options.checked(len(inputs))
    if jobs < 1 or chunk < 1:
        raise DataError(f'jobs {jobs} and chunk {chunk} must be at least 1')
    pool = ProcessPoolExecutor(jobs, initializer=start_worker, initargs=(os.getpid(),)) if jobs > 1 else None
    stats = FuseStats()
    try:
        indexes = list(pool.map(index_submission, inputs)) if pool else [index_submission(p) for p in inputs]
        plan = image_plan(inputs, indexes)
        del indexes
        work = ((inputs, options, plan[i:i + chunk]) for i in range(0, len(plan), chunk))
        results = _in_order(pool, fuse_chunk, work, 2 * jobs) if pool else map(fuse_chunk, work)
        with SubmissionWriter(out, SCORE_FORMAT) as writer, \
                progress_bar(total=len(plan), enabled=progress, desc='fuse', unit='img') as bar:
            for rows in results:
                for image_id, width, height, text, n_in, n_out in rows:
                    writer.write_raw(image_id, width, height, text)
                    stats.images += 1
                    stats.detections_in += n_in
                    stats.detections_out += n_out
                bar.update(len(rows))
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    return stats


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog='python -m util.post.fuse',
                                     description='Fuse instance-segmentation submissions per image and label.')
    parser.add_argument('inputs', nargs='+', help='submission CSVs (any image order; missing images = nothing)')
    parser.add_argument('-o', '--out', required=True, help='the fused submission CSV')
    parser.add_argument('--method', choices=METHODS, default='wbf')
    parser.add_argument('--weights', type=float, nargs='+', help='one per input (default 1 each)')
    parser.add_argument('--iou-thr', type=float, default=0.55,
                        help='cluster at box IoU > this (wbf), mask IoU >= this (vote, nms); 0.55')
    parser.add_argument('--conf-type', choices=CONF_TYPES, default='box_and_model_avg',
                        help="wbf's fused score (avg can exceed 1 with unequal weights: clipped)")
    parser.add_argument('--skip-box-thr', type=float, default=0.0, help='drop input scores below this')
    parser.add_argument('--max-per-img', type=int, default=None, help='keep the N best fused detections')
    parser.add_argument('--mask-thr', type=float, default=0.5, help='fused mask: weighted mean > this (0.5)')
    parser.add_argument('--jobs', type=int, default=1, help='worker processes')
    add_progress_flag(parser)
    args = parser.parse_args(argv)
    options = FuseOptions(args.method, tuple(args.weights) if args.weights else None, args.iou_thr,
                          args.conf_type, args.skip_box_thr, args.max_per_img, args.mask_thr)
    stats = fuse_submissions(args.inputs, args.out, options, args.jobs, args.progress)
    print(f'{args.out}: {stats}', file=sys.stderr)


if __name__ == '__main__':
    sys.exit(run(main))
