"""The challenge metric as an mmengine ``Metric``: validation during training reports the official number.

``OIDChallengeMetric`` reads the raw GT files (masks CSV + PNGs, box CSV, image-level labels CSV,
hierarchy, class CSV) and scores the predictions of the images it receives with the same code as
``python -m util.metric.evaluate`` (``util.metric.evaluator``): on the same images and predictions both give the
same mAP. Only GT images that received predictions are evaluated (a held-out split of train/validation).

    val_evaluator = dict(
        type='OIDChallengeMetric',
        masks_csv='data/oid/challenge-2019-validation-segmentation-masks.csv',
        masks_dir='data/oid',                 # the PNGs, directly or in validation-masks-0..f/
        bbox_csv='data/oid/challenge-2019-validation-segmentation-bbox.csv',
        labels_csv='data/oid/challenge-2019-validation-segmentation-labels.csv',
        hierarchy='data/challenge-2019-label300-segmentable-hierarchy.json',
        classes='data/challenge-2019-classes-description-segmentable.csv',
        expand_predictions=False,             # True: copy a leaf model's detections to every ancestor
        ties='official',                      # default: the official scorer's order of equal scores;
                                              # 'fp-first': false positives first (deterministic)
        workers=1)
    # reported as 'oid/mAP@0.5IOU'

Predictions: ``pred_instances`` with ``labels`` (indices into the dataset's ``metainfo['mids']``),
``scores`` and ``masks`` (bool H x W at ``ori_shape``, or RLE dicts); the image is ``img_id`` (an Open
Images ImageID). Only compressed RLEs are kept between ``process`` and ``compute_metrics``.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from mmdet.registry import METRICS
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger

from util.common.errors import DataError
from util.common.hierarchy import DEFAULT_CLASSES, DEFAULT_HIERARCHY
from util.common.mask_codec import encode_binary_batch
from util.metric.classes import load_classes
from util.metric.detections import check_scores, class_indices
from util.metric.evaluator import ImageTask, evaluate_tasks
from util.metric.groundtruth import MaskFinder, read_ground_truth
from util.metric.rules import TIES, check_ties


def _numpy(x):
    return x.detach().cpu().numpy() if hasattr(x, 'detach') else np.asarray(x)


@METRICS.register_module()
class OIDChallengeMetric(BaseMetric):
    """Open Images Challenge 2019 instance-segmentation mAP@0.5IOU on the images seen in validation."""

    default_prefix = 'oid'

    def __init__(self, masks_csv: str, masks_dir: str, bbox_csv: str, labels_csv: str,
                 hierarchy: str = DEFAULT_HIERARCHY, classes: str = DEFAULT_CLASSES, data_root: str = '',
                 expand_predictions: bool = False, skip_unknown_labels: bool = False, workers: int = 1,
                 ties: str = TIES[0], collect_device: str = 'cpu', prefix: str | None = None, **kwargs):
        """Relative GT paths are joined to ``data_root``, as the datasets do with theirs. ``ties``: the order
        of equal scores, as in ``util.metric.evaluate --ties``: 'official' (default, the leaderboard's number)
        or 'fp-first'."""
        super().__init__(collect_device=collect_device, prefix=prefix, **kwargs)
        masks_csv, masks_dir, bbox_csv, labels_csv = (
            os.path.join(data_root, p) for p in (masks_csv, masks_dir, bbox_csv, labels_csv))
        self.files = (masks_csv, bbox_csv, labels_csv)
        self.masks_dir = masks_dir
        self.classes, self.names = load_classes(hierarchy, classes)
        self.expand_predictions = expand_predictions
        self.skip_unknown_labels = skip_unknown_labels
        self.workers = workers
        self.ties = check_ties(ties)
        self._gt_cache = (None, None)        # (image ids, GroundTruthFiles): the held-out split is fixed

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Keep each image's predictions as MIDs, scores and compressed RLEs (never dense masks)."""
        mids = list((self.dataset_meta or {}).get('mids') or ())
        if not mids:
            raise DataError("OIDChallengeMetric needs the dataset's metainfo['mids'] (the MID of each label)")
        for sample in data_samples:
            pred = sample['pred_instances']
            if 'masks' not in pred:
                raise DataError(f'image {sample["img_id"]}: pred_instances has no masks (a mask model is needed)')
            height, width = (int(v) for v in sample['ori_shape'][:2])
            labels = _numpy(pred['labels']).astype(np.int64).reshape(-1)
            masks = pred['masks']
            if isinstance(masks, (list, tuple)):
                rles = list(masks)
            else:
                masks = _numpy(masks)
                if masks.size and masks.shape[-2:] != (height, width):
                    raise DataError(f'image {sample["img_id"]}: masks are {masks.shape[-2]}x{masks.shape[-1]}, '
                                    f'ori_shape is {height}x{width}')
                rles = encode_binary_batch(masks.reshape(-1, height, width))
            self.results.append(dict(image_id=str(sample['img_id']), height=height, width=width,
                                     mids=[mids[i] for i in labels.tolist()],
                                     scores=_numpy(pred['scores']).astype(np.float64).reshape(-1), rles=rles))

    def _ground_truth(self, image_ids: set):
        if self._gt_cache[0] != image_ids:
            known = set(self.classes.hierarchy.order) | set(self.classes.mids)
            gt = read_ground_truth(*self.files, known, image_ids)
            self._gt_cache = (set(image_ids), gt)
        return self._gt_cache[1]

    def _tasks(self, results, gt):
        seen = set()
        for r in results:
            if r['image_id'] in seen:              # an image evaluated twice would count its GT twice
                continue
            seen.add(r['image_id'])
            where = f'image {r["image_id"]}'
            idx, keep, _ = class_indices(r['mids'], self.classes, where, self.skip_unknown_labels)
            yield ImageTask(r['image_id'], where, gt.images.get(r['image_id']), (r['height'], r['width']), idx,
                            check_scores(r['scores'][keep], where), rles=[r['rles'][k] for k in keep],
                            expand=self.expand_predictions)

    def compute_metrics(self, results: list) -> dict:
        logger = MMLogger.get_current_instance()
        gt = self._ground_truth({r['image_id'] for r in results})
        for p in gt.problems():
            logger.warning(p)
        result = evaluate_tasks(self._tasks(results, gt), self.classes, MaskFinder(self.masks_dir), self.workers,
                                self.ties)
        logger.info(f'OID challenge metric: {result.images_evaluated} images with GT, {result.images_ignored} '
                    f'without; {int((result.counted_gt > 0).sum())} classes with counted GT; '
                    f'mAP@0.5IOU={result.mean_ap:.10f}')
        return {'mAP@0.5IOU': result.mean_ap}
