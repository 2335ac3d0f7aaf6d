"""One test shard through an ensemble into a results file (``util.post.results_io``), resumable.

The shard's images are predicted in annotation-file order and appended one line per image; every finished
image is on disk at once (the writer flushes it), so a killed run loses only the image in flight. A
finished shard (its results file exists) is not recomputed; an interrupted one (``.partial`` left behind)
resumes after the last complete image, and the finished file has the same bytes as an uninterrupted run.
Every input is checked before any model is built, so a bad path fails in seconds, naming the file.

An unreadable image (missing, truncated, corrupt) stops the run with one line naming it; the ``.partial``
stays, so the run resumes there once the file is fixed. With ``skip_unreadable`` it gets an empty
prediction instead, and is listed in ``OUT.unreadable.tsv`` (rewritten atomically after each one; a
resumed run keeps the earlier entries) and in the summary.

    ensemble_test(configs, checkpoints, ann_file, images_dir, out, shard=None, ...)   -> ShardSummary
    load_models(configs, checkpoints, device)      -> detectors (mmdet's init_detector)
    select_shard(data_list, index, count)          -> the index-th of count consecutive shards
    run_shard(ensemble, data_list, images_dir, out, classes, ...)                    -> ShardSummary
"""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import torch

from util.common.atomic import AtomicWriter
from util.common.cli import progress as progress_bar
from util.common.errors import DataError
from util.common.mask_codec import encode_binary_batch
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
            if not os.path.isfile(path):
                raise DataError(f'{path}: {kind} not found')


def load_models(configs: Sequence[str], checkpoints: Sequence[str], device: str = 'cpu') -> list:
    """Build each detector from its config and load its checkpoint (weights only; the class count comes
    from the config). An unreadable checkpoint is a DataError naming it (``mmdet_ext.checkpoint``)."""
    from mmdet.apis import init_detector

    from ..launch import load_config
    check_files(configs, checkpoints)
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


def run_shard(ensemble, data_list: list, images_dir: str, out: str, classes: Sequence[str],
              progress: bool = True, skip_unreadable: bool = False) -> ShardSummary:
    """Predict every image of ``data_list`` not yet in ``out`` (see the module docstring)."""
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
        bar = progress_bar(todo, progress, total=len(data_list), initial=len(data_list) - len(todo),
                           unit='img', desc=name)
        for done, (item, path) in enumerate(bar, len(data_list) - len(todo) + 1):
            try:
                dets = ensemble.predict(path, img_id=item['img_id'])
            except UnreadableImage as e:
                if not skip_unreadable:
                    raise DataError(f'{e}; the finished images are kept in {writer.partial}: fix or replace '
                                    'the file and rerun to resume, or pass --skip-unreadable') from None
                writer.write(item['img_id'], item['width'], item['height'], [], [], [])
                summary.unreadable.append((str(item['img_id']), path, str(e).removeprefix(f'{path}: ')))
                _write_unreadable(side, summary.unreadable)
            else:
                height, width = dets.masks.shape[-2:]
                if (height, width) != (item['height'], item['width']):
                    raise DataError(f'{path}: image is {width}x{height}, the annotation file says '
                                    f'{item["width"]}x{item["height"]}')
                writer.write(item['img_id'], width, height, dets.labels.tolist(), dets.scores.tolist(),
                             _rles(dets.masks))
                summary.predicted += 1
            if log:
                print(f'{name}: {done}/{len(data_list)} images written', file=sys.stderr, flush=True)
    return summary


def ensemble_test(configs: Sequence[str], checkpoints: Sequence[str], ann_file: str, images_dir: str,
                  out: str, shard: tuple[int, int] | None = None, device: str = 'cpu',
                  scales: Sequence[Sequence[int]] | None = None, progress: bool = True,
                  skip_unreadable: bool = False, **ensemble_kwargs) -> ShardSummary:
    """The whole test of one shard: check inputs, build the ensemble, run it (see ``run_shard``).

    ``scales`` default to the first config's test scale; ``ensemble_kwargs`` go to ``EnsembleTTA``
    (flip, weights, score_thr, max_per_img, ...).
    """
    from util.data.annotations import load_annotations

    from .tta import EnsembleTTA
    if os.path.exists(out):
        return ShardSummary(out, 'skipped')
    doc = load_annotations(ann_file)
    data_list = doc['data_list'] if shard is None else select_shard(doc['data_list'], *shard)
    image_paths(data_list, images_dir, allow_missing=skip_unreadable)
    check_files(configs, checkpoints)
    weights = ensemble_kwargs.get('weights')
    if weights is not None and len(weights) != len(configs):
        raise DataError(f'{len(weights)} weights for {len(configs)} models: give one weight per config')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise DataError(f'--device {device}: CUDA is not available on this machine')
    torch.backends.cudnn.benchmark = False      # same bytes on every run
    torch.backends.cudnn.deterministic = True
    models = load_models(configs, checkpoints, device)
    if scales is None:
        scales = [config_test_scale(models[0].cfg)]
    try:
        ensemble = EnsembleTTA(models, scales, **ensemble_kwargs)
    except ValueError as e:       # models that cannot be ensembled, bad weights
        raise DataError(str(e)) from None
    return run_shard(ensemble, data_list, images_dir, out, doc['metainfo']['mids'], progress,
                     skip_unreadable)


def config_test_scale(cfg) -> tuple[int, int]:
    """The Resize scale of a config's test pipeline: the single-model view."""
    from mmdet.utils import get_test_pipeline_cfg
    for step in get_test_pipeline_cfg(cfg):
        if str(step['type']).split('.')[-1] == 'Resize':
            return tuple(step['scale'])
    raise DataError('the test pipeline has no Resize; give --scales')
