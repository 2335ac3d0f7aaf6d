"""The challenge metric held ready for many evaluations of the same images: ground truth read once.

A search scores hundreds of settings on the same validation images. Reading the ground-truth CSVs and
decoding and resizing every mask PNG is most of one evaluation's cost, so a session does it once, in
worker processes, and keeps each image's ``GroundTruth`` in the workers of a pool that lives as long as
the session; an evaluation then sends only the predictions. The numbers are those of
``util.metric.evaluate`` on the same images (same rules, same tie order).

    session = MetricSession(masks_csv, masks_dir, bbox_csv, labels_csv, hierarchy, classes_csv,
                            sizes={image_id: (height, width)}, workers=2)
    session.evaluate(predictions, image_ids=None, outcomes=False)    -> SessionResult
    session.close()                                                    (or use it as a context manager)

``predictions``: image id -> (labels (MIDs), scores, EncodedMasks), a submission row's triples; an image
of ``image_ids`` without predictions has its GT counted as misses, as the official scorer counts them.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from dataclasses import dataclass, field

import numpy as np

from ..common.errors import DataError
from ..common.mask_codec import decode_encoded_batch
from ..common.workers import start_worker
from .classes import load_classes
from .detections import check_scores, class_indices, expand_to_ancestors
from .groundtruth import MaskFinder, load_ground_truth, read_ground_truth
from .rules import APAccumulator, Detections, EvalResult, evaluate_image

BATCH = 16

_STATE: dict = {}


@dataclass
class SessionResult:
    result: EvalResult
    outcomes: dict = field(default_factory=dict)     # image id -> (class indices, scores, outcome codes)

    @property
    def mean_ap(self) -> float:
        return self.result.mean_ap


def _load_batch(items):
    finder = _STATE['finder']
    return [(image_id, load_ground_truth(rec, finder, *size)) for image_id, rec, size in items]


def _init_loader(finder):
    _STATE['finder'] = finder


def _init_evaluator(classes, truths, ties):
    _STATE.update(classes=classes, truths=truths, ties=ties)


def _evaluate_batch(tasks):
    classes, truths, ties = _STATE['classes'], _STATE['truths'], _STATE['ties']
    out = []
    for image_id, pred, expand, outcomes in tasks:
        gt, (height, width) = truths[image_id]
        if pred is None:
            dets = Detections.empty()
        else:
            labels, scores, encoded = pred
            where = f'image {image_id}'
            idx, _, _ = class_indices(labels, classes, where)
            dets = Detections(np.asarray(idx, np.int64), check_scores(scores, where),
                              decode_encoded_batch(list(encoded), height, width, where))
            if expand:
                dets = expand_to_ancestors(dets, classes)
        r = evaluate_image(gt, dets, classes, height, width, ties, outcomes=outcomes)
        codes = (dets.classes, dets.scores, r.outcomes) if outcomes and r is not None else None
        out.append((image_id, r, codes))
    return out


def _batches(items, n):
    return [items[i:i + n] for i in range(0, len(items), n)]


class MetricSession:
    """The ground truth of ``sizes``' images (height, width each), read once; see the module docstring.
    Images of ``sizes`` without any ground truth are ignored (``without_gt``), as by the official scorer."""

    def __init__(self, masks_csv: str, masks_dir: str, bbox_csv: str, labels_csv: str, hierarchy: str,
                 classes_csv: str, sizes: dict, workers: int = 1, ties: str = 'official'):
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
        self._pool = None
        if self.workers > 1:
            self._pool = self._context.Pool(self.workers, start_worker,
                                            (os.getpid(), _init_evaluator, (self.classes, self.truths, ties)))
        else:
            _init_evaluator(self.classes, self.truths, ties)

    def evaluate(self, predictions: dict, image_ids=None, expand: bool = False,
                 outcomes: bool = False) -> SessionResult:
        """mAP of ``predictions`` over ``image_ids`` (default: all of the session's); ``expand`` copies
        every detection to its ancestors first (a leaf model's submission); ``outcomes``: also each
        detection's TP / FP / ignored / not scored (``rules``), e.g. to fit a score calibration."""
        ids = self.image_ids if image_ids is None else sorted(image_ids)
        unknown = [i for i in ids if i not in self.truths and i not in self._without]
        if unknown:
            raise DataError(f'{len(unknown)} images are not in the session (first: {unknown[0]})')
        ignored = sum(1 for i in ids if i in self._without)
        ids = [i for i in ids if i in self.truths]
        tasks = [(i, predictions.get(i), expand, outcomes) for i in ids]
        if self._pool is None:
            results = _evaluate_batch(tasks)
        else:
            results = [x for part in self._pool.map(_evaluate_batch, _batches(tasks, BATCH)) for x in part]
        acc = APAccumulator(self.classes, self.ties)
        for _ in range(ignored):
            acc.add(None)
        codes = {}
        for image_id, r, c in results:
            acc.add(r, image_id)
            if c is not None:
                codes[image_id] = c
        return SessionResult(acc.result(), codes)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
