"""The Open Images instance-segmentation dataset for mmdetection 3.x.

Reads the annotation files of ``util.data.build`` / ``util.data.shards`` (see ``util.data.annotations``): per
image its file name, size, pixel boxes, 0-based labels into the file's class subset and compressed-RLE masks.
The class names and MIDs come from the file, so one dataset class serves the leaf (275), parent (23) and any
other subset. Federated files (``util.data.federated``) add, per image, ``verified_classes`` (the classes
verified present or absent: add it to ``PackDetInputs``' ``meta_keys`` so the federated loss sees it) and
box-only instances with ``ignore_flag`` 1, which mmdet's pipeline turns into ``ignored_instances``: ignore
regions for assigners with ``ignore_iof_thr`` > 0. An optional ``index_file`` (``util.data.rebalance``'s .npy
list of indices into the file's images, repeats allowed) defines the epoch: the rebalanced training list of
the reference.
"""
from __future__ import annotations

import os.path as osp
from typing import List

import numpy as np
from mmdet.datasets import BaseDetDataset
from mmdet.registry import DATASETS
from mmengine.fileio import get_local_path, join_path
from mmengine.utils import is_abs

from util.data.annotations import is_federated, load_annotations


def _instance(inst: dict) -> dict:
    """An annotation-file instance -> mmdet's. A box-only box (no mask; ``ignore_flag`` 1) gets its box as a
    polygon mask: the pipeline needs one per instance, and ignored instances never reach the mask loss."""
    mask = inst.get('mask')
    if mask is None:
        x1, y1, x2, y2 = inst['bbox']
        mask = [[x1, y1, x2, y1, x2, y2, x1, y2]]
    return dict(bbox=inst['bbox'], bbox_label=inst['bbox_label'], mask=mask,
                ignore_flag=inst.get('ignore_flag', 0))


@DATASETS.register_module()
class OIDInstanceDataset(BaseDetDataset):
    """Args beyond ``BaseDetDataset``:
        index_file: optional .npy of indices into the annotation file's images, in epoch order.
    """

    METAINFO = {'classes': (), 'mids': (), 'palette': None}

    def __init__(self, *args, index_file: str | None = None, **kwargs):
        self.index_file = index_file
        self._epoch_index = None
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> List[dict]:
        with get_local_path(self.ann_file, backend_args=self.backend_args) as local_ann:
            ann = load_annotations(local_ann)
        meta = ann['metainfo']
        if not self._metainfo.get('classes'):
            self._metainfo['classes'] = tuple(meta['classes'])
        if not self._metainfo.get('mids'):
            self._metainfo['mids'] = tuple(meta.get('mids', ()))
        self._metainfo.setdefault('subset', meta.get('subset'))
        if self._metainfo.get('palette') is None:
            rng = np.random.RandomState(0)
            self._metainfo['palette'] = [tuple(int(c) for c in rng.randint(0, 256, 3))
                                         for _ in self._metainfo['classes']]
        img_root = self.data_prefix.get('img', '')
        join = osp.join if '://' not in img_root else (lambda a, b: f"{a.rstrip('/')}/{b}")
        data_list = []
        for item in ann['data_list']:
            info = dict(
                img_path=join(img_root, item['img_path']),
                img_id=item['img_id'],
                width=int(item['width']),
                height=int(item['height']),
                instances=[_instance(inst) for inst in item.get('instances', ())],
            )
            if is_federated(item):
                info['verified_classes'] = np.union1d(np.asarray(item['verified_pos'], np.int64),
                                                      np.asarray(item['verified_neg'], np.int64))
            data_list.append(info)
        if self.index_file is not None:
            if self.data_root and not is_abs(self.index_file):
                self.index_file = join_path(self.data_root, self.index_file, backend_args=self.backend_args)
            with get_local_path(self.index_file, backend_args=self.backend_args) as local_index:
                index = np.load(local_index)
            if index.size and (index.min() < 0 or index.max() >= len(data_list)):
                raise ValueError(f'{self.index_file}: indices outside [0, {len(data_list)}) of {self.ann_file}')
            self._epoch_index = index.astype(np.int64)
        return data_list

    def filter_data(self) -> List[dict]:
        """Drop images without instances in training (not with an index list: it indexes the full file)."""
        if self.test_mode or self._epoch_index is not None or not self.filter_cfg:
            return self.data_list
        keep_empty = not self.filter_cfg.get('filter_empty_gt', False)
        min_size = self.filter_cfg.get('min_size', 0)
        return [d for d in self.data_list
                if (keep_empty or d['instances']) and min(d['width'], d['height']) >= min_size]

    def __len__(self) -> int:
        if not self._fully_initialized:
            self.full_init()
        if self._epoch_index is not None:
            return len(self._epoch_index)
        return super().__len__()

    def get_data_info(self, idx: int) -> dict:
        if self._epoch_index is not None:
            if not self._fully_initialized:
                self.full_init()
            idx = int(self._epoch_index[idx])
        return super().get_data_info(idx)

    @property
    def num_images(self) -> int:
        """Distinct images in the file (``len(self)`` counts the epoch list when an index file is used)."""
        return super().__len__()
