"""The search space: a Python file that defines ``space``, a dict of knob -> values.

    space = dict(
        method=['wbf', 'vote', 'nms'],          # a list: one of these (categorical)
        iou_thr=(0.4, 0.7),                     # two floats: a float range
        max_per_img=(50, 200),                  # two ints: an int range
        weights=(0.5, 2.0),                     # member weights: one float per member in this range
        conf_type='box_and_model_avg',          # anything else: fixed
    )

Knobs (``KNOBS``): the fusion (``method``, ``iou_thr``, ``conf_type``, ``mask_thr``, ``weights``), score
calibration (``calibrate``), and the post-processing (``expand``: copy detections to their ancestors;
``nms_iou``: mask NMS after the fusion, None = off; ``vote``: NMS masks voted; ``score_thr``;
``max_per_img``: each ensemble's own cap per image). Knobs left out take ``DEFAULTS``.

With a parent ensemble (``tools/ensemble_search.py --parent-config``), the leaf + parent combine of
``util.post.pipeline`` (see ``util.search.trial``): ``combine`` (default True: the reference's recipe;
without a parent ensemble the combine knobs are ignored and left out of the recorded setting),
``combine_iou`` (the parent mask NMS's ``--iou-thr``), ``combine_vote`` (``--vote``), ``combine_max_dets``
(``--max-dets``: the combined submission's per-image cap; None = uncapped, the pipeline's default).
``max_per_img`` is not the pipeline's ``--max-dets``: it caps the leaf and the parent ensemble's outputs
each (the ``test_cfg`` of both written configs), before they are combined. The parent members' weights
are ``weight:<name>`` knobs like the leaf members' (``weights``), the parent ensemble is fused with the
leaf's fusion setting, and with ``combine`` on ``expand`` is moot (the chain expands; the metric does not
expand again).
"""
from __future__ import annotations

import runpy

from ..common.errors import DataError

DEFAULTS = dict(method='wbf', iou_thr=0.55, conf_type='box_and_model_avg', mask_thr=0.5, weights=1.0,
                calibrate=False, expand=True, nms_iou=None, vote=False, score_thr=0.0, max_per_img=120,
                combine=True, combine_iou=0.5, combine_vote=False, combine_max_dets=None)
KNOBS = tuple(DEFAULTS)


def load_space(path: str) -> dict:
    """The file's ``space``, checked: known knobs, well-formed ranges."""
    try:
        space = runpy.run_path(path).get('space')
    except FileNotFoundError:
        raise DataError(f'{path}: search space file not found') from None
    except Exception as e:        # a syntax error in the user's file: one line naming it
        raise DataError(f'{path}: not a readable space file ({type(e).__name__}: {e})') from None
    if not isinstance(space, dict) or not space:
        raise DataError(f'{path}: must define space = dict(knob=values, ...)')
    unknown = sorted(set(space) - set(KNOBS))
    if unknown:
        raise DataError(f'{path}: unknown knobs {unknown}; known: {list(KNOBS)}')
    for knob, values in space.items():
        if isinstance(values, list) and not values:
            raise DataError(f'{path}: {knob} has no values')
        if isinstance(values, tuple) and (len(values) != 2 or not values[0] <= values[1]):
            raise DataError(f'{path}: {knob}: a range is (low, high) with low <= high, got {values!r}')
    return space


def suggest(trial, space: dict, members: list) -> dict:
    """One setting: every knob of ``space`` asked of the Optuna ``trial``, the rest from DEFAULTS."""
    setting = dict(DEFAULTS)
    for knob, values in space.items():
        if knob == 'weights':
            setting['weights'] = {m: _ask(trial, f'weight:{m}', values) for m in members}
        else:
            setting[knob] = _ask(trial, knob, values)
    if not isinstance(setting['weights'], dict):
        setting['weights'] = {m: float(setting['weights']) for m in members}
    return setting


def _ask(trial, name, values):
    if isinstance(values, list):
        return trial.suggest_categorical(name, values)
    if isinstance(values, tuple):
        low, high = values
        if isinstance(low, int) and isinstance(high, int) and not isinstance(low, bool):
            return trial.suggest_int(name, low, high)
        return trial.suggest_float(name, float(low), float(high))
    return values
