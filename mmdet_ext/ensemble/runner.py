"""One test shard through an ensemble into a results file (``util.post.results_io``), resumable.

The shard's images are predicted in annotation-file order and appended one line per image; every finished
image is on disk at once (the writer flushes it), so a killed run loses only the images in flight.
With ``workers`` > 0 the CPU work is overlapped with the model's: DataLoader workers make the next
images' views, and a process pool pastes, thresholds and RLE-encodes the masks from the small per-box
probabilities (``PendingMasks``) while the device predicts the next image; the order and the bytes of
the results are those of the serial path. A
finished shard (its results file exists) is not recomputed; an interrupted one (``.partial`` left behind)
resumes after the last complete image, and the finished file has the same bytes as an uninterrupted run.
Every input is checked before any model is built, so a bad path fails in seconds, naming the file.

An unreadable image (missing, truncated, corrupt) stops the run with one line naming it; the ``.partial``
stays, so the run resumes there once the file is fixed. With ``skip_unreadable`` it gets an empty
prediction instead, and is listed in ``OUT.unreadable.tsv`` (rewritten atomically after each one; a
resumed run keeps the earlier entries) and in the summary.

    ensemble_test(ensemble_cfg, ann_file, images_dir, out, shard=None, ...)        -> ShardSummary
    load_models(configs, checkpoints, device)      -> detectors (mmdet's init_detector)
    select_shard(data_list, index, count)          -> the index-th of count consecutive shards
    run_shard(ensemble, data_list, images_dir, out, classes, ...)                    -> ShardSummary
"""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import Sequence

import torch

from util.common.atomic import AtomicWriter
from util.common.cli import progress as progress_bar
from util.common.errors import DataError
from util.common.mask_codec import encode_binary_batch, encode_region
from util.common.workers import die_with_parent
from util.data.shards import shard_bounds
from util.post.results_io import ResultsWriter

from .views import UnreadableImage

ENCODE_CHUNK = 32   # masks RLE-encoded per call: bounds the dense copies pycocotools makes
UNREADABLE_SUFFIX = '.unreadable.tsv'
UNREADABLE_HEADER = 'image_id\tpath\treason\n'


@dataclass
class ShardSummary:
    """What a run did: 'finished', 'resumed' or 'skipped' (the results file existed), how many images
    the models predicted in this run, how many were already in the partial file, and the unreadable
    images given empty predictions (``(image_id, path, reason)``, earlier runs' included)."""
    out: str
    status: str
    predicted: int = 0
    already_done: int = 0
    unreadable: list[tuple[str, str, str]] = field(default_factory=list)

    def line(self) -> str:
        if self.status == 'skipped':
            return f'{self.out}: already finished, skipped'
        text = (f'{self.out}: {self.status}: {self.predicted} images predicted, '
                f'{self.already_done} already done')
        if self.unreadable:
            text += (f', {len(self.unreadable)} unreadable given empty predictions (listed in '
                     f'{self.out}{UNREADABLE_SUFFIX})')
        return text


def check_files(configs: Sequence[str], checkpoints: Sequence[str]) -> None:
    if len(configs) != len(checkpoints):
        raise DataError(f'{len(configs)} configs but {len(checkpoints)} checkpoints: give one checkpoint '
                        'per config, in the same order')
    for kind, paths in (('config', configs), ('checkpoint', checkpoints)):
        for path in paths:
            if not (os.path.isfile(path) or (kind == 'checkpoint' and os.path.isdir(path))):
                raise DataError(f'{path}: {kind} not found')


def load_models(configs: Sequence[str], checkpoints: Sequence[str], device: str = 'cpu') -> list:
    """Build each detector from its config and load its checkpoint (weights only; the class count comes
    from the config). An unreadable checkpoint is a DataError naming it (``mmdet_ext.checkpoint``)."""
    from mmdet.apis import init_detector

    from ..launch import load_config, resolve_checkpoint
    check_files(configs, checkpoints)
    checkpoints = [resolve_checkpoint(c) for c in checkpoints]
    models = []
    for config, checkpoint in zip(configs, checkpoints):
        # init_detector turns on every warning ('once') when a checkpoint has no class names, which the
        # ensemble takes from the annotation file anyway: drop that one, re-issue the rest under the
        # caller's filters. A palette given: it neither warns about one nor builds the test dataset.
        with warnings.catch_warnings(record=True) as caught:
            models.append(init_detector(load_config(config), checkpoint, device=device, palette='random'))
        for w in caught:
            if 'class names are not saved in the checkpoint' not in str(w.message):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return models


def select_shard(data_list: list, index: int, count: int) -> list:
    """The ``index``-th (from 0) of ``count`` consecutive near-equal shards: the split of util.data.shards."""
    if not 0 <= index < count:
        raise DataError(f'--shard {index}/{count}: the index must be in 0..{count - 1}')
    start, end = shard_bounds(len(data_list), count)[index]
    return data_list[start:end]


def image_paths(data_list: list, images_dir: str, allow_missing: bool = False) -> list[str]:
    """Full paths of the shard's images; the first missing one is an error unless ``allow_missing``."""
    paths = [os.path.join(images_dir, item['img_path']) for item in data_list]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing and not allow_missing:
        more = f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''
        raise DataError(f'{missing[0]}: image not found{more}; or pass --skip-unreadable to give missing '
                        'images empty predictions')
    return paths


def _rles(masks: torch.Tensor) -> list[dict]:
    masks = masks.numpy()
    return [rle for i in range(0, len(masks), ENCODE_CHUNK)
            for rle in encode_binary_batch(masks[i:i + ENCODE_CHUNK])]


def read_unreadable(path: str) -> list[tuple[str, str, str]]:
    """The entries of an unreadable-images list written by an earlier run (none if there is no file)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding='utf-8') as f:
        lines = f.read().splitlines()
    if not lines or lines[0] + '\n' != UNREADABLE_HEADER or any(line.count('\t') != 2 for line in lines[1:]):
        raise DataError(f'{path}: not a list of unreadable images (header {UNREADABLE_HEADER.strip()!r}); '
                        'delete it to start the list afresh')
    return [tuple(line.split('\t')) for line in lines[1:]]


def _write_unreadable(path: str, entries: list[tuple[str, str, str]]) -> None:
    with AtomicWriter(path) as f:
        f.write(UNREADABLE_HEADER)
        for entry in entries:
            f.write('\t'.join(v.replace('\t', ' ').replace('\n', ' ') for v in entry) + '\n')


@dataclass
class PendingMasks:
    """One image's detections after the device work, before its masks exist at full size: per-box mask
    probabilities (N x h x w, in the box) to paste at ``height`` x ``width`` and threshold, or ``masks``
    already at full size (late fusion of models that predict full masks). Small enough to send to a
    worker process (120 x 28 x 28 floats), unlike the 120 full-size masks it becomes."""
    bboxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    height: int
    width: int
    probs: torch.Tensor | None = None
    mask_thr: float = 0.5
    masks: torch.Tensor | None = None


def _on_cpu(pending: PendingMasks) -> PendingMasks:
    """The device's tensors copied to the CPU before they go to a worker process (CUDA tensors must not)."""
    for name in ('bboxes', 'scores', 'labels', 'probs', 'masks'):
        value = getattr(pending, name)
        if value is not None:
            setattr(pending, name, value.detach().cpu())
    return pending


def finish_masks(pending: PendingMasks) -> tuple[list, list, list]:
    """Paste, threshold and RLE-encode: (labels, scores, RLEs), what the results file stores. Each mask is
    pasted into its own region and encoded from it (``encode_region``): the bytes of encoding the full-size
    masks, at a fraction of the cost."""
    from .masks import paste_crops
    if pending.masks is not None:
        rles = _rles(pending.masks.cpu())
    else:
        h, w = pending.height, pending.width
        rles = [encode_region(crop, y0, x0, h, w)
                for crop, y0, x0 in paste_crops(pending.probs, pending.bboxes, h, w, pending.mask_thr)]
    return pending.labels.tolist(), pending.scores.tolist(), rles


def _serial(ensemble, todo):
    """(item, path, (height, width, labels, scores, RLEs) or UnreadableImage) per image, in order."""
    for item, path in todo:
        try:
            dets = ensemble.predict(path, img_id=item['img_id'])
        except UnreadableImage as e:
            yield item, path, e
            continue
        height, width = dets.masks.shape[-2:]
        yield item, path, (height, width, dets.labels.tolist(), dets.scores.tolist(), _rles(dets.masks.cpu()))


class _ViewsOf(torch.utils.data.Dataset):
    """The views of each image to predict, made in DataLoader workers; an unreadable image is returned,
    not raised, so that the main process decides (stop, or skip it) in image order."""

    def __init__(self, view_maker, todo):
        self.view_maker, self.todo = view_maker, todo

    def __len__(self):
        return len(self.todo)

    def __getitem__(self, i):
        item, path = self.todo[i]
        try:
            return i, self.view_maker(path, item['img_id'])
        except UnreadableImage as e:
            return i, e


def _one_thread(parent: int, *_):
    """Pool and DataLoader workers: one torch thread each, and gone when the tester is (a SIGKILL)."""
    die_with_parent(parent)
    torch.set_num_threads(1)


def _pipelined(ensemble, todo, workers: int):
    """As ``_serial``, with the CPU work overlapped with the model's: views made ``workers`` images ahead
    in DataLoader workers, masks pasted and encoded in a pool of ``workers`` processes while the model
    predicts the next image. Output order and bytes are those of the serial path."""
    import multiprocessing as mp
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    on_cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    context = mp.get_context('spawn' if on_cuda or 'fork' not in mp.get_all_start_methods() else 'fork')
    loader = torch.utils.data.DataLoader(_ViewsOf(ensemble.view_maker, todo), batch_size=None, shuffle=False,
                                         num_workers=workers, multiprocessing_context=context,
                                         worker_init_fn=partial(_one_thread, os.getpid()),
                                         prefetch_factor=2)
    pending = deque()
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread,
                             initargs=(os.getpid(),)) as pool:
        def oldest():
            item, path, job = pending.popleft()
            if isinstance(job, UnreadableImage):
                return item, path, job
            shape, future = job
            return (item, path, (*shape, *future.result()))

        for i, views in loader:
            item, path = todo[i]
            if isinstance(views, UnreadableImage):
                pending.append((item, path, views))
            else:
                work = _on_cpu(ensemble.predict_views(views))
                pending.append((item, path, ((work.height, work.width), pool.submit(finish_masks, work))))
            while len(pending) > workers + 1:
                yield oldest()
        while pending:
            yield oldest()


def run_shard(ensemble, data_list: list, images_dir: str, out: str, classes: Sequence[str],
              progress: bool = True, skip_unreadable: bool = False, workers: int = 0) -> ShardSummary:
    """Predict every image of ``data_list`` not yet in ``out`` (see the module docstring). ``workers`` > 0
    pipelines the CPU work (``_pipelined``) when the ensemble can split its prediction (``predict_views``)."""
    if os.path.exists(out):
        return ShardSummary(out, 'skipped')
    if len(classes) != ensemble.num_classes:
        raise DataError(f'the annotation file lists {len(classes)} classes, the models predict '
                        f'{ensemble.num_classes}')
    paths = image_paths(data_list, images_dir, allow_missing=skip_unreadable)
    side = out + UNREADABLE_SUFFIX
    with ResultsWriter(out, classes, resume=True) as writer:
        summary = ShardSummary(out, 'resumed' if writer.done_ids else 'finished',
                               already_done=len(writer.done_ids), unreadable=read_unreadable(side))
        todo = [(item, path) for item, path in zip(data_list, paths)
                if str(item['img_id']) not in writer.done_ids]
        name = os.path.basename(out)
        log = progress and not sys.stderr.isatty()  # no bar in a log file: one line per image instead
        first = len(data_list) - len(todo)
        bar = progress_bar(total=len(data_list), initial=first, unit='img', desc=name, enabled=progress)
        pipelined = workers > 0 and len(todo) > 1 and hasattr(ensemble, 'predict_views')
        results = _pipelined(ensemble, todo, workers) if pipelined else _serial(ensemble, todo)
        try:
            for done, (item, path, result) in enumerate(results, first + 1):
                if isinstance(result, UnreadableImage):
                    if not skip_unreadable:
                        raise DataError(f'{result}; the finished images are kept in {writer.partial}: fix or '
                                        'replace the file and rerun to resume, or pass --skip-unreadable')
                    writer.write(item['img_id'], item['width'], item['height'], [], [], [])
                    summary.unreadable.append((str(item['img_id']), path,
                                               str(result).removeprefix(f'{path}: ')))
                    _write_unreadable(side, summary.unreadable)
                else:
                    height, width, labels, scores, rles = result
                    if (height, width) != (item['height'], item['width']):
                        raise DataError(f'{path}: image is {width}x{height}, the annotation file says '
                                        f'{item["width"]}x{item["height"]}')
                    writer.write(item['img_id'], width, height, labels, scores, rles)
                    summary.predicted += 1
                bar.update(1)
                if log:
                    print(f'{name}: {done}/{len(data_list)} images written', file=sys.stderr, flush=True)
        finally:
            results.close()             # on a stop the workers end here; finished images are on disk
            bar.close()
    return summary


class HalfPrecision:
    """An ensemble whose predictions run under CUDA autocast (fp16 convolutions and matrix products; mmdet's
    heads cast back to fp32 where they must). Outputs are made fp32 again before anything is averaged
    across images or written."""

    def __init__(self, ensemble):
        self.ensemble, self.num_classes = ensemble, ensemble.num_classes
        if hasattr(ensemble, 'predict_views'):          # the pipelined runner's split prediction
            self.view_maker, self.predict_views = ensemble.view_maker, self._predict_views

    def predict(self, image, img_id=0):
        with torch.autocast('cuda', dtype=torch.float16):
            dets = self.ensemble.predict(image, img_id)
        dets.bboxes, dets.scores = dets.bboxes.float(), dets.scores.float()
        return dets

    def _predict_views(self, views):
        with torch.autocast('cuda', dtype=torch.float16):
            work = self.ensemble.predict_views(views)
        work.bboxes, work.scores = work.bboxes.float(), work.scores.float()
        if work.probs is not None:
            work.probs = work.probs.float()
        return work


def ensemble_test(ensemble_cfg, ann_file: str, images_dir: str, out: str,
                  shard: tuple[int, int] | None = None, device: str = 'cpu', progress: bool = True,
                  skip_unreadable: bool = False, fp16: bool = False,
                  workers: int | None = None) -> ShardSummary:
    """The whole test of one shard: check inputs, build the ensemble, run it (see ``run_shard``).

    ``ensemble_cfg``: an ensemble config (``config.load_ensemble_config`` / ``config_from_flags``); the
    ensemble predicts the annotation file's classes. ``fp16``: autocast on CUDA; on the CPU a warning and
    fp32 (as training's fp16 fallback). ``workers``: see ``run_shard`` (default 2 on CUDA, 1 on the CPU).
    """
    from util.data.annotations import load_annotations

    from .config import build_ensemble, check_config
    if os.path.exists(out):
        return ShardSummary(out, 'skipped')
    check_config(ensemble_cfg, ensemble_cfg.filename or 'the ensemble')
    doc = load_annotations(ann_file)
    data_list = doc['data_list'] if shard is None else select_shard(doc['data_list'], *shard)
    image_paths(data_list, images_dir, allow_missing=skip_unreadable)
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise DataError(f'--device {device}: CUDA is not available on this machine')
    torch.backends.cudnn.benchmark = False      # same bytes on every run
    torch.backends.cudnn.deterministic = True
    if fp16 and not device.startswith('cuda'):
        print(f'warning: --fp16 needs a CUDA device; {device} predicts in fp32', file=sys.stderr)
        fp16 = False
    ensemble = build_ensemble(ensemble_cfg, doc['metainfo']['mids'], device)
    if fp16:
        ensemble = HalfPrecision(ensemble)
    if workers is None:
        workers = 2 if device.startswith('cuda') else 1
    if workers < 0:
        raise DataError(f'--workers {workers}: give 0 (no worker processes) or more')
    return run_shard(ensemble, data_list, images_dir, out, doc['metainfo']['mids'], progress,
                     skip_unreadable, workers)


def config_test_scale(cfg) -> tuple[int, int]:
    """The Resize scale of a config's test pipeline: the single-model view."""
    from mmdet.utils import get_test_pipeline_cfg
    for step in get_test_pipeline_cfg(cfg):
        if str(step['type']).split('.')[-1] == 'Resize':
            return tuple(step['scale'])
    raise DataError('the test pipeline has no Resize; give --scales')
