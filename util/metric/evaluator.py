"""Run the challenge metric over many images, in worker processes, with bounded memory.

Shared by the command line (``util.metric.evaluate``) and the training-time Metric (``mmdet_ext.challenge_metric``):
both describe each image as an ``ImageTask`` and get one ``EvalResult``.

    ImageTask                                   one image: GT record, size, predictions (encoded or RLE)
    evaluate_tasks(tasks, classes, finder, workers, ties)   -> rules.EvalResult

Tasks stream through a pool a few batches at a time, so a submission of any size never sits in memory
whole. Results are summed in task order and the AP does not depend on that order, so the mAP is the same
to the last digit for any number of workers.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..common.errors import DataError
from ..common.image_io import find_image, image_size
from ..common.mask_codec import check_rles, decode_encoded_batch
from ..common.workers import start_worker
from .detections import expand_to_ancestors
from .groundtruth import ImageRecord, MaskFinder, load_ground_truth
from .rules import APAccumulator, Classes, Detections, EvalResult, evaluate_image

BATCH = 8                       # images per worker call
IN_FLIGHT_PER_WORKER = 3        # batches queued per worker


@dataclass
class ImageTask:
    """One image to evaluate. ``size`` = (height, width) the predictions claim; ``images_dir`` (optional)
    holds the image whose header is the authority. Predictions are ``encoded`` strings or ``rles``.
    ``record`` None: the image is not in the ground truth (ignored, as by the official scorer)."""
    image_id: str
    where: str
    record: ImageRecord | None
    size: tuple | None = None
    classes: list = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    encoded: list | None = None
    rles: list | None = None
    images_dir: str | None = None
    expand: bool = False


def _image_size(task: ImageTask):
    """(height, width) of the image: from its header when an images folder is given, checked against the
    predictions' claim; else the claim; None when neither is known."""
    if task.images_dir is None:
        return task.size
    w, h = image_size(find_image(task.images_dir, task.image_id, task.where))
    if task.size is not None and tuple(task.size) != (h, w) and (task.encoded or task.rles):
        raise DataError(f'{task.where}: predictions are for {task.size[1]}x{task.size[0]} (WxH), '
                        f'the image is {w}x{h}')
    return h, w


_CONTEXT: dict = {}


def _init(classes: Classes, finder: MaskFinder, ties: str = 'official') -> None:
    _CONTEXT['classes'], _CONTEXT['finder'], _CONTEXT['ties'] = classes, finder, ties


def _masks(task: ImageTask, size) -> list:
    """The task's predicted masks as RLEs, each checked to cover exactly ``size`` (height, width)."""
    if task.encoded:
        masks = decode_encoded_batch(task.encoded, size[0], size[1], task.where)
    elif task.rles:
        masks = check_rles(task.rles, size[0], size[1], task.where)
    else:
        masks = []
    return masks


def run_task(task: ImageTask):
    """Evaluate one image -> ImageResult, or None for an image outside the ground truth: ignored, as the
    official scorer does; its masks are still checked against the size its row claims, and its image file
    is never looked up."""
    classes, finder = _CONTEXT['classes'], _CONTEXT['finder']
    if task.record is None:
        _masks(task, task.size)
        return None
    size = _image_size(task)
    masks = _masks(task, size)
    dets = Detections(np.asarray(task.classes, np.int64), np.asarray(task.scores, np.float64), masks)
    if task.expand:
        dets = expand_to_ancestors(dets, classes)
    h, w = size if size is not None else (None, None)
    gt = load_ground_truth(task.record, finder, h, w)
    return evaluate_image(gt, dets, classes, h, w, _CONTEXT['ties'])


def _run_batch(tasks):
    return [run_task(t) for t in tasks]


def _batches(tasks, n):
    batch = []
    for t in tasks:
        batch.append(t)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def evaluate_tasks(tasks, classes: Classes, finder: MaskFinder, workers: int = 1,
                   ties: str = 'official') -> EvalResult:
    """Evaluate every task (an iterable, consumed lazily) and return the per-class APs and the mAP.
    ``ties``: 'official' (the reference's order, default) or 'fp-first' (see ``rules``)."""
    acc = APAccumulator(classes, ties)
    if workers <= 1:
        _init(classes, finder, ties)
        for t in tasks:
            acc.add(run_task(t), t.image_id)
        return acc.result()
    method = 'fork' if 'fork' in mp.get_all_start_methods() else 'spawn'
    with mp.get_context(method).Pool(workers, initializer=start_worker,
                                     initargs=(os.getpid(), _init, (classes, finder, ties))) as pool:
        pending = deque()

        def collect():
            ids, job = pending.popleft()
            for image_id, r in zip(ids, job.get()):
                acc.add(r, image_id)

        for batch in _batches(tasks, BATCH):
            pending.append(([t.image_id for t in batch], pool.apply_async(_run_batch, (batch,))))
            while len(pending) >= workers * IN_FLIGHT_PER_WORKER:
                collect()
        while pending:
            collect()
    return acc.result()
