"""The search: an Optuna study over the space, each trial scored on both folds, resumable.

The study lives in a SQLite file, so an interrupted search (Ctrl-C, a killed job) resumes where it
stopped without repeating finished trials, and several processes may share one study. Trials are chosen
by the TPE sampler (seeded), or by the grid sampler when every knob is a list and ``grid`` is asked. The
objective is the mAP on fold A (the fold the choice is made on); fold B's mAP is stored beside it and is
the honest number of the chosen setting.

    open_study(storage, name, seed, space, grid)      -> optuna.Study
    start_from_defaults(study, space, members)        -> the hand-set recipe queued as the first trial(s)
    run_trials(study, n_trials, objective, progress)  -> trials run now (the total counts finished ones)
    baselines(members, session, folds)                -> rows: each member-view alone, the defaults
                                                         (and, with a parent ensemble, the defaults combined)
"""
from __future__ import annotations

import json

import optuna

from ..common.errors import DataError
from .space import DEFAULTS, suggest
from .trial import COMBINE_KNOBS, combines, effective_setting, pipeline_command, score_setting

STUDY_NAME = 'ensemble'        # the study's name inside OUT/study.db

optuna.logging.set_verbosity(optuna.logging.ERROR)     # a trial stopped by Ctrl-C is not a warning with a traceback


def open_study(storage: str, name: str, seed: int = 0, space: dict | None = None,
               grid: bool = False) -> optuna.Study:
    if grid:
        if not space or not all(isinstance(v, list) for v in space.values() if not _fixed(v)) \
                or 'weights' in space:
            raise DataError('--grid needs a space whose knobs are all lists (weights excepted)')
        sampler = optuna.samplers.GridSampler({k: v for k, v in space.items() if isinstance(v, list)}, seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed)
    return optuna.create_study(study_name=name, storage=storage, sampler=sampler, direction='maximize',
                               load_if_exists=True)


def _fixed(values) -> bool:
    return not isinstance(values, (list, tuple))


def finished(study) -> list:
    return [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]


def make_objective(space, members, session, folds, calibrators=None):
    def objective(trial):
        setting = effective_setting(suggest(trial, space, members.all_members), members)
        fold_a, fold_b = score_setting(setting, members, session, folds, calibrators)
        trial.set_user_attr('setting', json.dumps(setting, sort_keys=True))
        trial.set_user_attr('fold_b', fold_b)
        return fold_a
    return objective


def default_params(space: dict, members: list, **overrides) -> dict:
    """The Optuna params of the hand-set recipe (DEFAULTS, equal weights) in ``space``: a knob whose default
    lies outside its values is left to the sampler, a fixed knob is no param."""
    params = {}
    for knob, values in space.items():
        found = _among(overrides.get(knob, DEFAULTS[knob]), values)
        if found is _ABSENT:
            continue
        if knob == 'weights':
            params.update({f'weight:{m}': found for m in members})
        else:
            params[knob] = found
    return params


_ABSENT = object()


def _among(value, values):
    """``value`` as the space's knob offers it (a list's own element: 0 for 0.0), or _ABSENT."""
    if isinstance(values, list):
        same = [v for v in values if v == value and isinstance(v, bool) == isinstance(value, bool)]
        return same[0] if same else _ABSENT
    if isinstance(values, tuple) and value is not None and not isinstance(value, bool):
        low, high = values
        ints = isinstance(low, int) and isinstance(high, int) and not isinstance(low, bool)
        if low <= value <= high and (not ints or value == int(value)):
            return int(value) if ints else float(value)
    return _ABSENT


def start_from_defaults(study, space: dict, members) -> list[dict]:
    """Queue the hand-set recipe (and, with a parent ensemble, its leaf-only variant) as the study's first
    trials, so that the search starts where a user would and its choice on fold A is never below the
    defaults. Queued once: a resumed or shared study that already holds them (finished or waiting) gets
    none again; one cut short by Ctrl-C is queued anew."""
    variants = [default_params(space, members.all_members)]
    if members.parent is not None and _among(False, space.get('combine')) is not _ABSENT:
        variants.append(default_params(space, members.all_members, combine=False))
    held = [t.system_attrs.get('fixed_params', t.params) for t in study.get_trials(deepcopy=False)
            if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.WAITING)]
    queued = []
    for params in variants:
        if params not in held and params not in queued:
            study.enqueue_trial(params)
            queued.append(params)
    return queued


def run_trials(study, n_trials: int, objective, progress: bool = True) -> int:
    """Run trials until the study holds ``n_trials`` finished ones; returns how many ran now."""
    todo = max(0, n_trials - len(finished(study)))
    if todo:
        study.optimize(objective, n_trials=todo, show_progress_bar=progress, gc_after_trial=False)
    return todo


def baselines(members, session, folds, calibrators=None) -> list[dict]:
    """Reference rows: every leaf member-view alone (a single model's own prediction, the default post
    settings), the default setting of every knob over all leaf member-views (the hand-set recipe, leaf
    only) and, with a parent ensemble, the same combined with it by the reference's chain (the defaults)."""
    rows = []
    for k, name in enumerate(members.names):
        alone = type(members)([name], [members.member_of[k]], members.sizes,
                              {i: [d[k]] for i, d in members.dets.items()})
        setting = effective_setting(dict(DEFAULTS, weights={members.member_of[k]: 1.0}), alone)
        a, b = score_setting(setting, alone, session, folds)
        rows.append(dict(name=f'single {name}', fold_a=a, fold_b=b, setting=setting))
    weights = {m: 1.0 for m in members.all_members}
    setting = effective_setting(dict(DEFAULTS, weights=weights, combine=False), members)
    a, b = score_setting(setting, members, session, folds, calibrators)
    rows.append(dict(name='hand-set (defaults)', fold_a=a, fold_b=b, setting=setting))
    if members.parent is not None:
        setting = dict(DEFAULTS, weights=weights, combine=True)
        a, b = score_setting(setting, members, session, folds, calibrators)
        rows.append(dict(name='hand-set + parent combine (defaults)', fold_a=a, fold_b=b, setting=setting))
    return rows


def run_search(members, session, space: dict, out_dir: str, n_trials: int, seed: int = 0,
               grid: bool = False, fold_seed: int = 0, progress: bool = True, extra=None, log=print) -> dict:
    """The whole search into ``out_dir``: study.db (resumable), leaderboard.csv/.md, knobs.png,
    best_setting.json, and calibration.json (the maps fitted on fold A, of the leaf and the parent members)
    when the space tries calibration. ``extra``: {name: predictions} scored on both folds as more reference
    rows (e.g. the shared-proposal fusion, which needs the models and is run, not searched). Returns the
    best row; when it combines, its ``pipeline`` is the ``util.post.pipeline`` command line of the combine."""
    import os

    from .calibrate import fit_calibrators, save_calibrators
    from .members import split_folds
    from .report import leaderboard, plot_knobs, write_leaderboard
    os.makedirs(out_dir, exist_ok=True)
    folds = split_folds(members.sizes, fold_seed)
    parent = members.parent
    log(f'{len(members.names)} member-views of {len(members.members)} members; '
        + (f'parent ensemble: {len(parent.names)} member-views of {len(parent.members)} members; '
           if parent is not None else '')
        + f'{len(folds[0])} + {len(folds[1])} validation images in folds A and B')
    if parent is None and set(space) & set(COMBINE_KNOBS):
        log('no parent ensemble: the space\'s combine knobs are ignored')
    calibrators = None
    if space.get('calibrate', False) not in (False, [False]):
        calibrators = fit_calibrators(members, session, folds[0])       # fold A only
        if parent is not None:
            calibrators.update(fit_calibrators(parent, session, folds[0]))
        save_calibrators(os.path.join(out_dir, 'calibration.json'), calibrators)
        log('calibration fitted on fold A: ' + ', '.join(f'{m} ({c.samples} detections)'
                                                          for m, c in calibrators.items()))
    study = open_study(f'sqlite:///{os.path.abspath(os.path.join(out_dir, "study.db"))}', STUDY_NAME, seed,
                       space, grid)
    before = len(finished(study))
    if not grid and before < n_trials:
        start_from_defaults(study, space, members)
    ran = run_trials(study, n_trials, make_objective(space, members, session, folds, calibrators), progress)
    log(f'{ran} trials run now, {before} finished before (resumed)' if before else f'{ran} trials run')
    rows = baselines(members, session, folds, calibrators)
    for name, preds in (extra or {}).items():
        rows.append(dict(name=name, fold_a=session.evaluate(preds, image_ids=folds[0]).mean_ap,
                         fold_b=session.evaluate(preds, image_ids=folds[1]).mean_ap, setting={}))
    board = leaderboard(study, rows)
    write_leaderboard(board, os.path.join(out_dir, 'leaderboard.csv'), os.path.join(out_dir, 'leaderboard.md'))
    plot_knobs(study, os.path.join(out_dir, 'knobs.png'))
    best = study.best_trial
    chosen = dict(json.loads(best.user_attrs['setting']), trial=best.number, fold_a=best.value,
                  fold_b=best.user_attrs['fold_b'])
    if combines(chosen, members):
        chosen['pipeline'] = pipeline_command(chosen, members.hierarchy)
    elif parent is None and chosen.get('combine'):
        log(f'the best trial ({best.number}) combined with a parent ensemble this run was not given: its number '
            'is not the leaf ensemble\'s alone; rerun with the same --parent-config')
    from ..common.atomic import AtomicWriter
    with AtomicWriter(os.path.join(out_dir, 'best_setting.json')) as f:
        json.dump(chosen, f, indent=1, sort_keys=True)
    return chosen
