"""One test shard through an ensemble into a results file (``util.post.results_io``), resumable.

The shard's images are predicted in annotation-file order and appended one line per image. A finished
shard (its results file exists) is not recomputed; an interrupted one (``.partial`` left behind) resumes
after the last complete image, and the finished file has the same bytes as an uninterrupted run.
Every input is checked before any model is built, so a bad path fails in seconds, naming the file.

    ensemble_test(configs, checkpoints, ann_file, images_dir, out, shard=None, ...)   the whole run
    load_models(configs, checkpoints, device)      -> detectors (mmdet's init_detector)
    select_shard(data_list, index, count)          -> the index-th of count consecutive shards
    run_shard(ensemble, data_list, images_dir, out, classes)
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
from tqdm import tqdm

from util.common.errors import DataError
from util.common.mask_codec import encode_binary_batch
from util.post.results_io import ResultsWriter
from util.data.shards import shard_bounds

ENCODE_CHUNK = 32   # masks RLE-encoded per call: bounds the dense copies pycocotools makes


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
    from the config)."""
    from mmdet.apis import init_detector

    from ..launch import load_config
    check_files(configs, checkpoints)
    # A palette given: init_detector neither warns about it nor builds the test dataset to look for one.
    return [init_detector(load_config(c), w, device=device, palette='random')
            for c, w in zip(configs, checkpoints)]


def select_shard(data_list: list, index: int, count: int) -> list:
    """The ``index``-th (from 0) of ``count`` consecutive near-equal shards: the split of util.data.shards."""
    if not 0 <= index < count:
        raise DataError(f'--shard {index}/{count}: the index must be in 0..{count - 1}')
    start, end = shard_bounds(len(data_list), count)[index]
    return data_list[start:end]


def image_paths(data_list: list, images_dir: str) -> list[str]:
    """Full paths of the shard's images; the first missing one is an error."""
    paths = [os.path.join(images_dir, item['img_path']) for item in data_list]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        more = f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''
        raise DataError(f'{missing[0]}: image not found{more}')
    return paths


def _rles(masks: torch.Tensor) -> list[dict]:
    masks = masks.numpy()
    return [rle for i in range(0, len(masks), ENCODE_CHUNK)
            for rle in encode_binary_batch(masks[i:i + ENCODE_CHUNK])]


def run_shard(ensemble, data_list: list, images_dir: str, out: str, classes: Sequence[str],
              progress: bool = True) -> str:
    """Predict every image of ``data_list`` not yet in ``out``; returns 'finished', 'resumed' or 'skipped'
    (``out`` already complete)."""
    if os.path.exists(out):
        return 'skipped'
    if len(classes) != ensemble.num_classes:
        raise DataError(f'the annotation file lists {len(classes)} classes, the models predict '
                        f'{ensemble.num_classes}')
    paths = image_paths(data_list, images_dir)
    with ResultsWriter(out, classes, resume=True) as writer:
        resumed = bool(writer.done_ids)
        todo = [(item, path) for item, path in zip(data_list, paths)
                if str(item['img_id']) not in writer.done_ids]
        bar = tqdm(todo, total=len(data_list), initial=len(data_list) - len(todo), unit='img',
                   desc=os.path.basename(out), disable=not progress, dynamic_ncols=True)
        for item, path in bar:
            dets = ensemble.predict(path, img_id=item['img_id'])
            height, width = dets.masks.shape[-2:]
            if (height, width) != (item['height'], item['width']):
                raise DataError(f'{path}: image is {width}x{height}, the annotation file says '
                                f'{item["width"]}x{item["height"]}')
            writer.write(item['img_id'], width, height, dets.labels.tolist(), dets.scores.tolist(),
                         _rles(dets.masks))
    return 'resumed' if resumed else 'finished'


def ensemble_test(configs: Sequence[str], checkpoints: Sequence[str], ann_file: str, images_dir: str,
                  out: str, shard: tuple[int, int] | None = None, device: str = 'cpu',
                  scales: Sequence[Sequence[int]] | None = None, progress: bool = True,
                  **ensemble_kwargs) -> str:
    """The whole test of one shard: check inputs, build the ensemble, run it (see ``run_shard``).

    ``scales`` default to the first config's test scale; ``ensemble_kwargs`` go to ``EnsembleTTA``
    (flip, weights, score_thr, max_per_img, ...). Returns 'finished', 'resumed' or 'skipped'.
    """
    from util.data.annotations import load_annotations

    from .tta import EnsembleTTA
    if os.path.exists(out):
        return 'skipped'
    doc = load_annotations(ann_file)
    data_list = doc['data_list'] if shard is None else select_shard(doc['data_list'], *shard)
    image_paths(data_list, images_dir)
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
    return run_shard(ensemble, data_list, images_dir, out, doc['metainfo']['mids'], progress)


def config_test_scale(cfg) -> tuple[int, int]:
    """The Resize scale of a config's test pipeline: the single-model view."""
    from mmdet.utils import get_test_pipeline_cfg
    for step in get_test_pipeline_cfg(cfg):
        if str(step['type']).split('.')[-1] == 'Resize':
            return tuple(step['scale'])
    raise DataError('the test pipeline has no Resize; give --scales')
