"""Views of one test image: each scale of the test pipeline, optionally mirrored.

A view is made by the model's own test pipeline (load, keep-ratio ``Resize`` to the view's scale,
``PackDetInputs``), so one view at the config's test scale is exactly the input of a single-model test.
Mirroring is done here on the packed image, before any model pads it, and is recorded on the view only:
the metainfo handed to mmdet never says ``flip`` (mmdet 3.3's cascade mask branch crashes on it), and the
ensemble maps boxes and masks in and out of mirrored views itself.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch
from mmdet.registry import TRANSFORMS
from mmdet.structures.bbox import bbox_mapping, bbox_mapping_back
from mmdet.utils import get_test_pipeline_cfg
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope

from util.common.errors import DataError
from util.common.image_io import decoded_image_size

# What the heads need, and no 'flip' / 'flip_direction'.
VIEW_META_KEYS = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')


class UnreadableImage(DataError):
    """An image file that cannot be decoded (missing, truncated, corrupt, not an image)."""


def _reason(e: BaseException) -> str:
    return re.sub(r'\s+', ' ', f'{type(e).__name__}: {e}').strip()


def check_decodes(path: str) -> None:
    """The whole file decodes (``util.common.image_io``'s strict decode, PIL), or UnreadableImage."""
    try:
        decoded_image_size(path)
    except DataError as e:
        raise UnreadableImage(str(e)) from None


@dataclass(frozen=True)
class ViewSpec:
    scale: tuple[int, int]      # (long, short) bound of mmdet's keep-ratio Resize, e.g. (1333, 800)
    flip: bool = False          # horizontal mirror


def view_specs(scales: Sequence[Sequence[int]], flip: bool) -> list[ViewSpec]:
    """Every scale, each also mirrored when ``flip``: the reference's scales x {original, flipped}."""
    flips = (False, True) if flip else (False,)
    return [ViewSpec((int(s[0]), int(s[1])), f) for s in scales for f in flips]


@dataclass
class ViewImage:
    """One view of one image, before any model's data_preprocessor (uint8, C x H x W, as loaded)."""
    spec: ViewSpec
    inputs: torch.Tensor
    metainfo: dict              # img_shape, scale_factor (w, h), ori_shape, ...

    @property
    def scale_factor4(self) -> tuple[float, float, float, float]:
        w, h = self.metainfo['scale_factor']
        return (w, h, w, h)

    def to_view(self, boxes: torch.Tensor) -> torch.Tensor:
        """Boxes of the original image -> this view's pixels (scaled, then mirrored)."""
        return bbox_mapping(boxes, self.metainfo['img_shape'], self.scale_factor4, self.spec.flip)

    def to_original(self, boxes: torch.Tensor) -> torch.Tensor:
        """This view's boxes (N x 4k) -> original image pixels (un-mirrored, then un-scaled)."""
        return bbox_mapping_back(boxes, self.metainfo['img_shape'], self.scale_factor4, self.spec.flip)


def _type_name(step: dict) -> str:
    t = step['type']
    return (t if isinstance(t, str) else t.__name__).split('.')[-1]


class ViewMaker:
    """Builds the views of an image with a config's test pipeline, the Resize scale set per view.

    The image is decoded once; every scale resizes the decoded array. Steps of the pipeline that need
    annotations are dropped (test images have none).
    """

    def __init__(self, cfg, specs: Sequence[ViewSpec]):
        init_default_scope(cfg.get('default_scope', 'mmdet'))
        steps = [copy.deepcopy(s) for s in get_test_pipeline_cfg(cfg)
                 if _type_name(s) not in ('LoadAnnotations', 'RandomFlip')]
        resize = [i for i, s in enumerate(steps) if _type_name(s) == 'Resize']
        if len(resize) != 1 or _type_name(steps[0]) not in ('LoadImageFromFile', 'LoadImageFromNDArray') \
                or _type_name(steps[-1]) != 'PackDetInputs':
            raise ValueError('the test pipeline must be LoadImageFromFile, one Resize, ..., PackDetInputs; '
                             f'got {[_type_name(s) for s in steps]}')
        self.specs = list(specs)
        # mmdet's inference_detector leaves LoadImageFromNDArray in a model's cfg after an array input
        self._load_file = TRANSFORMS.build(ConfigDict(steps[0], type='LoadImageFromFile'))
        array_loader = ConfigDict(steps[0], type='mmdet.LoadImageFromNDArray')
        self._load_array = TRANSFORMS.build(array_loader)
        steps[-1]['meta_keys'] = VIEW_META_KEYS
        self._per_scale = {}
        for scale in dict.fromkeys(s.scale for s in self.specs):
            scaled = copy.deepcopy(steps[1:])
            scaled[resize[0] - 1].update(scale=scale, scale_factor=None)
            self._per_scale[scale] = [TRANSFORMS.build(s) for s in scaled]

    def load(self, image: str | np.ndarray, img_id=0) -> dict:
        """Decode a file (or take a BGR array) once: the results dict every view starts from."""
        if isinstance(image, np.ndarray):
            return self._load_array(dict(img=image, img_id=img_id))
        if '://' not in image:                      # local files; gs:// ones are read by the pipeline
            check_decodes(image)
        try:
            return self._load_file(dict(img_path=image, img_id=img_id))
        except AssertionError:                      # mmcv's "failed to load image": OpenCV gave nothing
            raise UnreadableImage(f'{image}: image does not decode (OpenCV gives no pixels)') from None
        except (OSError, ValueError, cv2.error) as e:
            raise UnreadableImage(f'{image}: image does not decode ({_reason(e)})') from None

    def __call__(self, image: str | np.ndarray, img_id=0) -> list[ViewImage]:
        return self.views_of(self.load(image, img_id))

    def views_of(self, loaded: dict) -> list[ViewImage]:
        """The views of an image already decoded by ``load``."""
        packed = {}
        for scale, transforms in self._per_scale.items():
            results = dict(loaded)
            for t in transforms:
                results = t(results)
            packed[scale] = results
        views = []
        for spec in self.specs:
            results = packed[spec.scale]
            inputs = results['inputs']
            if spec.flip:
                inputs = inputs.flip(-1)
            views.append(ViewImage(spec, inputs, dict(results['data_samples'].metainfo)))
        return views
