"""Ensemble config files: which models, which views, which fusion, which test settings.

An ensemble is an mmengine config (``_base_`` inheritance and ``--cfg-options`` work as for any config)
with four entries; ``configs/ensemble/`` holds the reference's recipes and the demo's:

    members = [                      # one dict per model
        dict(config='configs/oid/....py', checkpoint='weights/l1.pth', weight=1.0, classes=None, name='l1'),
    ]
    views = dict(scales=[(1333, 800), (1600, 960)], flip=True)    # scales=None: first member's test scale
    fusion = dict(type='SharedProposals', max_proposals=1000, proposal_iou=0.7, proposal_nms='across-views')
    test_cfg = dict(score_thr=0.0, iou_thr=None, max_per_img=120, mask_thr=None)   # None: first member's

``classes`` of a member: None when it predicts the ensemble's classes (the annotation file's, in that
order); a class subset (a preset such as ``parent`` or a class-list file, ``util.common.hierarchy``) or a
list of MIDs for a class-subset expert, whose scores then count only for its own classes. Paths are
relative to the working directory (the repository root); a checkpoint may be a work dir whose
``last_checkpoint`` names the file. ``fusion.type`` is a name in ``fusion.FUSIONS``.

The command-line flags of ``tools/ensemble_test.py`` (``--configs``, ``--scales``, ``--score-thr``, ...)
build the same config (``config_from_flags``) or override a file's (``apply_flags``), so a recipe given as
flags and the same recipe as a file are one code path and give the same bytes.

    load_ensemble_config(path, cfg_options)         -> Config
    config_from_flags(flags)                        -> Config
    apply_flags(cfg, flags)                         -> Config (checked)
    build_ensemble(cfg, classes, device, timer)     -> a fusion object with .predict(image, img_id)
"""
from __future__ import annotations

import os
from typing import Sequence

from mmengine.config import Config

from util.common.errors import DataError

FUSION_DEFAULT = 'SharedProposals'
TEST_KEYS = ('score_thr', 'iou_thr', 'max_per_img', 'mask_thr')
MEMBER_KEYS = {'config', 'checkpoint', 'weight', 'classes', 'name'}
# Flags of tools/ensemble_test.py that belong to the shared-proposal fusion, and their parameter names.
SHARED_PROPOSAL_FLAGS = {'max_proposals': 'max_proposals', 'proposal_iou': 'proposal_iou',
                         'proposal_nms': 'proposal_nms'}


def load_ensemble_config(path: str, cfg_options: dict | None = None) -> Config:
    """Read an ensemble config file and apply ``--cfg-options`` (a dict); checked (``check_config``)."""
    if not os.path.isfile(path):
        raise DataError(f'{path}: ensemble config not found')
    try:
        cfg = Config.fromfile(path)
    except Exception as e:       # a syntax error or a missing _base_: say which file, in one line
        raise DataError(f'{path}: not a readable config ({type(e).__name__}: {e})') from None
    if cfg_options:
        try:
            cfg.merge_from_dict(dict(cfg_options))
        except (KeyError, TypeError, IndexError, AttributeError, ValueError) as e:
            raise DataError(f'{path}: --cfg-options: {type(e).__name__}: {e}') from None
    return cfg


def config_from_flags(flags: dict) -> Config:
    """The ensemble the old flags describe (``--configs`` ... ``--proposal-nms``) as a config."""
    configs = flags.get('configs') or []
    if not configs:
        raise DataError('give an ensemble config file, or --configs with --checkpoints')
    cfg = Config(dict(members=[dict(config=c) for c in configs], views=dict(scales=None, flip=False),
                      fusion=dict(type=FUSION_DEFAULT), test_cfg={k: None for k in TEST_KEYS}))
    return apply_flags(cfg, flags, source='the command line')


def apply_flags(cfg: Config, flags: dict, source: str | None = None) -> Config:
    """Flags given on top of a config: each one set replaces the config's value. ``--configs`` replaces the
    members' configs (same count), ``--checkpoints`` and ``--weights`` their checkpoints and weights."""
    source = source or cfg.filename or 'the ensemble config'
    members = cfg.get('members')
    if not isinstance(members, (list, tuple)) or not members:
        raise DataError(f'{source}: needs members = [dict(config=..., checkpoint=...), ...]')
    for key in ('configs', 'checkpoints', 'weights'):
        values = flags.get(key)
        if values is None:
            continue
        if len(values) != len(members):
            raise DataError(f'{len(values)} --{key} for the {len(members)} members of {source}: give one each')
        for member, value in zip(members, values):
            member[key[:-1]] = value
    views = cfg.setdefault('views', dict(scales=None, flip=False))
    if flags.get('scales') is not None:
        views['scales'] = [list(s) for s in flags['scales']]
    if flags.get('flip'):
        views['flip'] = True
    test_cfg = cfg.setdefault('test_cfg', {})
    for key in TEST_KEYS:
        if flags.get(key) is not None:
            test_cfg[key] = flags[key]
    fusion = cfg.setdefault('fusion', dict(type=FUSION_DEFAULT))
    for flag, param in SHARED_PROPOSAL_FLAGS.items():
        if flags.get(flag) is None:
            continue
        if fusion.get('type', FUSION_DEFAULT) != 'SharedProposals':
            raise DataError(f'--{flag.replace("_", "-")} is a parameter of the SharedProposals fusion; '
                            f'{source} uses {fusion.get("type")}')
        fusion[param] = flags[flag]
    check_config(cfg, source)
    return cfg


def check_config(cfg: Config, source: str) -> None:
    """Every member has a config and a checkpoint, known keys, a non-negative weight; views and test
    settings are well formed. Files are checked here too, so a typo fails before any model is built."""
    members = cfg.get('members')
    if not isinstance(members, (list, tuple)) or not members:
        raise DataError(f'{source}: needs members = [dict(config=..., checkpoint=...), ...]')
    for i, member in enumerate(members):
        if not isinstance(member, dict):
            raise DataError(f'{source}: members[{i}] is not a dict')
        unknown = set(member) - MEMBER_KEYS
        if unknown:
            raise DataError(f'{source}: members[{i}] has unknown keys {sorted(unknown)} '
                            f'(known: {sorted(MEMBER_KEYS)})')
        for key, kind in (('config', 'config'), ('checkpoint', 'checkpoint')):
            path = member.get(key)
            if not path:
                raise DataError(f'{source}: members[{i}] has no {key}')
            if not (os.path.isfile(path) or (key == 'checkpoint' and os.path.isdir(path))):
                raise DataError(f'{path}: {kind} not found (members[{i}] of {source})')
        weight = member.get('weight', 1.0)
        if not isinstance(weight, (int, float)) or weight < 0:
            raise DataError(f'{source}: members[{i}].weight must be a number >= 0, got {weight!r}')
    if sum(m.get('weight', 1.0) for m in members) <= 0:
        raise DataError(f'{source}: the member weights sum to 0')
    views = cfg.get('views', {})
    if set(views) - {'scales', 'flip'}:
        raise DataError(f'{source}: views has unknown keys {sorted(set(views) - {"scales", "flip"})}')
    scales = views.get('scales')
    if scales is not None:
        if not scales or not all(len(s) == 2 and all(isinstance(v, int) and v > 0 for v in s)
                                 for s in scales):
            raise DataError(f'{source}: views.scales must be a list of (long, short) pairs of positive ints, '
                            f'got {scales!r}')
    unknown = set(cfg.get('test_cfg', {})) - set(TEST_KEYS)
    if unknown:
        raise DataError(f'{source}: test_cfg has unknown keys {sorted(unknown)} (known: {list(TEST_KEYS)})')
    if not isinstance(cfg.get('fusion'), dict) or 'type' not in cfg.fusion:
        raise DataError(f"{source}: needs fusion = dict(type='SharedProposals' | 'WBF' | 'NMS' | ...)")


def member_classes(spec, ensemble_classes: Sequence[str], index: int) -> list[int] | None:
    """A member's ``classes`` -> the ensemble class index of each class it predicts (None: the same list)."""
    if spec is None:
        return None
    if isinstance(spec, str):
        from util.common.hierarchy import load_default, subset_classes
        try:
            mids = subset_classes(load_default(), spec)
        except (ValueError, OSError) as e:
            raise DataError(f'members[{index}].classes: {e}') from None
    else:
        mids = [str(m) for m in spec]
    position = {mid: k for k, mid in enumerate(ensemble_classes)}
    outside = [m for m in mids if m not in position]
    if outside:
        raise DataError(f'members[{index}].classes: {len(outside)} classes are not among the ensemble\'s '
                        f'{len(ensemble_classes)} (first: {outside[0]}); the ensemble predicts the annotation '
                        "file's classes")
    return [position[m] for m in mids]


def view_scales(cfg: Config, first_model) -> list[tuple[int, int]]:
    scales = cfg.views.get('scales')
    if scales is None:
        from .runner import config_test_scale
        return [config_test_scale(first_model.cfg)]
    return [tuple(int(v) for v in s) for s in scales]


def member_name(member: dict) -> str:
    """A member's ``name``, else its config's file name: what caches, weights and calibrations are keyed by."""
    return member.get('name') or os.path.splitext(os.path.basename(member['config']))[0]


def build_members(cfg: Config, classes: Sequence[str], device: str = 'cpu'):
    """Load every member's model: (members, view specs, test settings) of the ensemble config."""
    from .members import Member
    from .runner import load_models
    from .views import view_specs
    members_cfg = cfg.members
    models = load_models([m['config'] for m in members_cfg],
                         [m['checkpoint'] for m in members_cfg], device)
    members = [Member(model, float(m.get('weight', 1.0)), member_classes(m.get('classes'), classes, i),
                      member_name(m))
               for i, (model, m) in enumerate(zip(models, members_cfg))]
    views = view_specs(view_scales(cfg, models[0]), bool(cfg.views.get('flip', False)))
    test_cfg = {k: cfg.get('test_cfg', {}).get(k) for k in TEST_KEYS}
    return members, views, test_cfg


def build_ensemble(cfg: Config, classes: Sequence[str], device: str = 'cpu', timer=None):
    """Load every member's model and build the configured fusion over them."""
    import inspect

    from .fusion import FUSIONS
    fusion = dict(cfg.fusion)
    if fusion['type'] not in FUSIONS.module_dict:
        raise DataError(f"fusion.type {fusion['type']!r} is unknown; known: {sorted(FUSIONS.module_dict)}")
    members, views, test_cfg = build_members(cfg, classes, device)
    defaults = dict(members=members, views=views, num_classes=len(classes), timer=timer, **test_cfg)
    if 'class_names' in inspect.signature(FUSIONS.module_dict[fusion['type']]).parameters:
        defaults['class_names'] = list(classes)
    try:
        return FUSIONS.build(fusion, default_args=defaults)
    except (ValueError, TypeError, KeyError) as e:  # members that cannot be ensembled, a parameter misspelt
        raise DataError(f'{cfg.filename or "the ensemble"}: {e}') from None
