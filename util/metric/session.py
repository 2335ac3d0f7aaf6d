"""The challenge metric held ready for many evaluations of the same images: ground truth read once.

A search scores hundreds of settings on the same validation images. Reading the ground-truth CSVs and
decoding and resizing every mask PNG is most of one evaluation's cost, so a session does it once, in
worker processes, and keeps each image's ``GroundTruth`` in the workers of a pool that lives as long as
the session; an evaluation then sends only the predictions. The numbers are those of
``util.metric.evaluate`` on the same images (same rules, same tie order).

Each worker owns a fixed share of the images, and remembers, per image, what the metric read of every
mask it has checked (``rules.MaskFeatures``: area, tight box, intersections with the GT), keyed by the
EncodedMask string: a mask seen in an earlier evaluation (a member's own mask that survived a fusion, a
setting tried again) is neither decoded nor intersected again. A new string is checked strictly, as
always. ``cache_masks`` bounds the remembered masks per image (least recently used go first; 0: none).

    session = MetricSession(masks_csv, masks_dir, bbox_csv, labels_csv, hierarchy, classes_csv,
                            sizes={image_id: (height, width)}, workers=2, worker_data=None)
    session.evaluate(predictions, image_ids=None, outcomes=False)    -> SessionResult
    session.evaluate(None, produce=f)        the predictions made in the workers: f(worker_data, image_id)
    session.close()                                                    (or use it as a context manager)
    session.produce_s, session.metric_s      worker seconds so far, making predictions and in the metric

``predictions``: image id -> (labels (MIDs), scores, EncodedMasks), a submission row's triples; an image
of ``image_ids`` without predictions has its GT counted as misses, as the official scorer counts them.
``produce`` (a picklable function, e.g. a ``functools.partial`` of a module-level one) lets the workers
make each image's predictions from ``worker_data`` (e.g. a search's cached member predictions, given once
at start), so that only the function travels, and the making runs in parallel too.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..common.errors import DataError
from ..common.mask_codec import decode_runs_batch
from ..common.workers import start_worker
from .classes import load_classes
from .detections import check_scores, class_indices, expand_to_ancestors
from .groundtruth import MaskFinder, load_ground_truth, read_ground_truth
from .rules import APAccumulator, Detections, EvalResult, MaskFeatures, evaluate_image, runs_features

BATCH = 16
CACHE_MASKS = 1024          # remembered masks per image and worker (a few hundred bytes each)

_STATE: dict = {}


@dataclass
class SessionResult:
    """The mAP and, per image, the outcomes when asked; ``produce_s`` / ``metric_s``: seconds the workers
    spent making predictions (``produce``) and in the metric, summed over workers."""
    result: EvalResult
    outcomes: dict = field(default_factory=dict)     # image id -> (class indices, scores, outcome codes)
    produce_s: float = 0.0
    metric_s: float = 0.0

    @property
    def mean_ap(self) -> float:
        return self.result.mean_ap


def _load_batch(items):
    finder = _STATE['finder']
    return [(image_id, load_ground_truth(rec, finder, *size)) for image_id, rec, size in items]


def _init_loader(finder):
    _STATE['finder'] = finder


def _init_evaluator(classes, truths, ties, data=None, cache_masks=CACHE_MASKS):
    _STATE.update(classes=classes, truths=truths, ties=ties, data=data, cache_masks=int(cache_masks),
                  cache={})


def _features(image_id: str, encoded, gt, height: int, width: int, where: str) -> MaskFeatures:
    """The image's masks' features: remembered rows where the string was seen, the rest decoded (strictly)
    and computed now. Rows are float64 [area, box (4), intersections]: exact for any image size."""
    cap = _STATE['cache_masks']
    cache = _STATE['cache'].setdefault(image_id, {})
    rows = list(map(cache.get, encoded))
    distinct = dict.fromkeys(encoded)
    fresh = {}
    if any(r is None for r in rows):
        new = [s for s in distinct if s not in cache]
        place = list(encoded).index
        runs = decode_runs_batch(new, height, width, lambda j: f'{where}: detection {place(new[j]) + 1}')
        f = runs_features(runs, gt, height, width)
        fresh = dict(zip(new, np.concatenate([f.areas[:, None], f.boxes, f.overlaps], axis=1).astype(np.float64)))
        rows = [fresh[s] if r is None else r for s, r in zip(encoded, rows)]
    table = np.array(rows) if rows else np.zeros((0, 5 + len(gt.masks)))
    if cap:
        for s in distinct:                   # most recently used last
            if s in fresh:                   # kept as a plain string: an EncodedMask would keep its counts
                cache[str(s) if type(s) is not str else s] = fresh[s]
            else:
                cache[s] = cache.pop(s)
        if len(cache) > cap:
            for s in list(cache)[:len(cache) - cap]:
                del cache[s]
    return MaskFeatures(table[:, 0].astype(np.int64), table[:, 1:5], table[:, 5:].astype(np.int64))


def _evaluate_batch(job):
    tasks, produce = job
    classes, truths, ties = _STATE['classes'], _STATE['truths'], _STATE['ties']
    out = []
    produce_s = 0.0
    start = time.perf_counter()
    for image_id, pred, expand, outcomes in tasks:
        gt, (height, width) = truths[image_id]
        if produce is not None:
            t = time.perf_counter()
            pred = produce(_STATE['data'], image_id)
            produce_s += time.perf_counter() - t
        if pred is None:
            dets = Detections.empty()
        else:
            labels, scores, encoded = pred
            where = f'image {image_id}'
            idx, _, _ = class_indices(labels, classes, where)
            dets = Detections(np.asarray(idx, np.int64), check_scores(scores, where), None,
                              _features(image_id, encoded, gt, height, width, where))
            if expand:
                dets = expand_to_ancestors(dets, classes)
        r = evaluate_image(gt, dets, classes, height, width, ties, outcomes=outcomes)
        codes = (dets.classes, dets.scores, r.outcomes) if outcomes and r is not None else None
        out.append((image_id, r, codes))
    return out, produce_s, time.perf_counter() - start - produce_s


def _batches(items, n):
    return [items[i:i + n] for i in range(0, len(items), n)]


class MetricSession:
    """The ground truth of ``sizes``' images (height, width each), read once; see the module docstring.
    Images of ``sizes`` without any ground truth are ignored (``without_gt``), as by the official scorer."""

    def __init__(self, masks_csv: str, masks_dir: str, bbox_csv: str, labels_csv: str, hierarchy: str,
                 classes_csv: str, sizes: dict, workers: int = 1, ties: str = 'official', worker_data=None,
                 cache_masks: int = CACHE_MASKS):
        self.classes, _ = load_classes(hierarchy, classes_csv)
        known = set(self.classes.hierarchy.order) | set(self.classes.mids)
        gt = read_ground_truth(masks_csv, bbox_csv, labels_csv, known, set(sizes))
        self.problems = gt.problems()
        # Images without ground truth are ignored, as the official scorer ignores them.
        self.without_gt = sorted(set(sizes) - set(gt.images))
        items = [(image_id, gt.images[image_id], tuple(sizes[image_id])) for image_id in sorted(sizes)
                 if image_id in gt.images]
        self.workers = max(1, int(workers))
        self._context = mp.get_context('fork' if 'fork' in mp.get_all_start_methods() else 'spawn')
        finder = MaskFinder(masks_dir)
        if self.workers == 1:
            _init_loader(finder)
            loaded = _load_batch(items)
        else:
            with self._context.Pool(self.workers, start_worker, (os.getpid(), _init_loader, (finder,))) as pool:
                loaded = [x for part in pool.map(_load_batch, _batches(items, BATCH)) for x in part]
        self.truths = {image_id: (truth, size) for (image_id, truth), (_, _, size) in zip(loaded, items)}
        self.image_ids = sorted(self.truths)
        self._without = set(self.without_gt)
        self.ties = ties
        self.worker_data = worker_data
        self.produce_s = self.metric_s = 0.0        # worker seconds over all evaluations (SessionResult)
        # Image k of the sorted ids belongs to worker k % workers, for the session's life: its masks'
        # features are remembered where they will be asked for again.
        self._owner = {image_id: k % self.workers for k, image_id in enumerate(self.image_ids)}
        self._pools = []
        if self.workers > 1:
            for w in range(self.workers):
                share = {i: t for i, t in self.truths.items() if self._owner[i] == w}
                self._pools.append(self._context.Pool(
                    1, start_worker, (os.getpid(), _init_evaluator,
                                      (self.classes, share, ties, worker_data, cache_masks))))
        else:
            _init_evaluator(self.classes, self.truths, ties, worker_data, cache_masks)

    def evaluate(self, predictions: dict | None, image_ids=None, expand: bool = False,
                 outcomes: bool = False, produce=None) -> SessionResult:
        """mAP of ``predictions`` over ``image_ids`` (default: all of the session's); ``expand`` copies
        every detection to its ancestors first (a leaf model's submission); ``outcomes``: also each
        detection's TP / FP / ignored / not scored (``rules``), e.g. to fit a score calibration;
        ``produce``: instead of ``predictions``, ``produce(worker_data, image_id)`` in the workers."""
        ids = self.image_ids if image_ids is None else sorted(image_ids)
        unknown = [i for i in ids if i not in self.truths and i not in self._without]
        if unknown:
            raise DataError(f'{len(unknown)} images are not in the session (first: {unknown[0]})')
        ignored = sum(1 for i in ids if i in self._without)
        ids = [i for i in ids if i in self.truths]
        get = (lambda i: None) if produce is not None else predictions.get
        tasks = [(i, get(i), expand, outcomes) for i in ids]
        if not self._pools:
            parts = [_evaluate_batch((tasks, produce))]
        else:
            pending = [self._pools[w].map_async(
                _evaluate_batch, [(b, produce) for b in _batches([t for t in tasks if self._owner[t[0]] == w],
                                                                 BATCH)])
                       for w in range(self.workers)]
            parts = [part for p in pending for part in p.get()]
        results = [x for part, _, _ in parts for x in part]
        acc = APAccumulator(self.classes, self.ties)
        for _ in range(ignored):
            acc.add(None)
        codes = {}
        for image_id, r, c in results:
            acc.add(r, image_id)
            if c is not None:
                codes[image_id] = c
        produce_s, metric_s = sum(p[1] for p in parts), sum(p[2] for p in parts)
        self.produce_s += produce_s
        self.metric_s += metric_s
        return SessionResult(acc.result(), codes, produce_s, metric_s)

    def close(self) -> None:
        for pool in self._pools:
            pool.close()
        for pool in self._pools:
            pool.join()
        self._pools = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:             # an error or Ctrl-C: do not wait for queued work
            for pool in self._pools:
                pool.terminate()
        self.close()
