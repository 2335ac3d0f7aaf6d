"""The ensemble search on cached member predictions: a trial is the normal pipeline's number, calibration
is monotone and fitted on its fold only, the study resumes without repeating trials."""
from __future__ import annotations

import json
import os

import numpy as np
import optuna
import pytest
from _eval_files import write_dataset
from conftest import run_cli

from util.common.mask_codec import encode_mask
from util.metric.evaluate import evaluate_files
from util.metric.rules import FALSE_POSITIVE, TRUE_POSITIVE
from util.metric.session import MetricSession
from util.search.calibrate import fit_calibrator, fit_calibrators
from util.search.members import MemberSet, split_folds
from util.search.space import DEFAULTS
from util.search.study import (STUDY_NAME, baselines, default_params, finished, open_study, run_search,
                               start_from_defaults)
from util.search.trial import score_setting, setting_predictions


@pytest.fixture(scope='module')
def ds(tmp_path_factory):
    ds = write_dataset(str(tmp_path_factory.mktemp('oid_search')), n_images=40, seed=11)
    rng = np.random.default_rng(0)
    for k in range(3):          # three "members": the predictions thinned, rescored, shifted a pixel
        rows = {}
        for image_id, dets in ds.predictions.items():
            rows[image_id] = [(label, float(np.clip(score * (0.6 + 0.2 * k) + rng.normal(0, 0.1), 0.01, 1)),
                               encode_mask(np.roll(mask, k - 1, axis=1)))
                              for label, score, mask in dets if rng.random() < 0.85]
        ds.write_submission(f'm{k}.csv', rows)
    return ds


@pytest.fixture(scope='module')
def members(ds):
    return MemberSet.from_files([('a', 'v0', ds.path('m0.csv')), ('a', 'v1', ds.path('m1.csv')),
                                 ('b', 'v0', ds.path('m2.csv'))])


@pytest.fixture(scope='module')
def session(ds, members):
    with MetricSession(ds.path('masks.csv'), ds.path('masks'), ds.path('bbox.csv'), ds.path('labels.csv'),
                       ds.args()[9], ds.args()[11], dict(members.sizes), workers=2, worker_data=members) as s:
        yield s         # its workers hold the members: score_setting fuses there (the search's way)


def quiet(*args, **kwargs):
    pass


def test_folds_are_a_seeded_split():
    ids = [f'{i:016x}' for i in range(101)]
    a, b = split_folds(ids, 0)
    assert sorted(a + b) == ids and abs(len(a) - len(b)) <= 1
    assert split_folds(list(reversed(ids)), 0) == (a, b) and split_folds(ids, 1) != (a, b)


@pytest.mark.parametrize('method', ['wbf', 'vote', 'nms'])
def test_a_trial_equals_the_pipeline_and_the_evaluator(ds, members, session, tmp_path, method):
    """The same setting through the command lines (fuse, expand, evaluate on the fold's rows): the same mAP
    to the last digit."""
    setting = dict(DEFAULTS, method=method, weights={'a': 1.0, 'b': 2.0}, iou_thr=0.5, max_per_img=25)
    fold = split_folds(members.sizes, 0)[1]
    fused = tmp_path / 'fused.csv'
    run_cli(['-m', 'util.post.fuse', ds.path('m0.csv'), ds.path('m1.csv'), ds.path('m2.csv'), '-o', str(fused),
             '--method', method, '--weights', '1', '1', '2', '--iou-thr', '0.5', '--max-per-img', '25',
             '--no-progress'])
    lines = fused.read_text().splitlines(True)
    only = tmp_path / 'fold.csv'
    only.write_text(lines[0] + ''.join(line for line in lines[1:] if line.split(',')[0] in set(fold)))
    run_cli(['-m', 'util.post.expand', str(only), '-o', str(tmp_path / 'expanded.csv')])
    expected = evaluate_files(ds.path('masks.csv'), ds.path('masks'), ds.path('bbox.csv'), ds.path('labels.csv'),
                              ds.args()[9], ds.args()[11], str(tmp_path / 'expanded.csv'), log=quiet,
                              submitted_only=True).mean_ap
    preds = setting_predictions(setting, members, fold)
    assert session.evaluate(preds, image_ids=fold, expand=True).mean_ap == expected
    assert score_setting(setting, members, session, ([], fold))[1] == expected


def test_calibration_is_monotone_and_fitted_on_its_fold_only(members, session):
    fold_a, fold_b = split_folds(members.sizes, 0)
    fitted = fit_calibrators(members, session, fold_a)
    grid = np.linspace(0, 1, 101)
    for calibrator in fitted.values():
        assert calibrator.model is not None and calibrator.samples >= 20
        mapped = calibrator.apply(grid)
        assert np.all(np.diff(mapped) >= 0) and mapped.min() >= 0 and mapped.max() <= 1
    # Fold B's predictions changed beyond recognition: the calibrators fitted on fold A do not move.
    scrambled = MemberSet(members.names, members.member_of, members.sizes,
                          {i: (d if i in fold_a else [[(lab, 1.0 - s, e) for lab, s, e in v] for v in d])
                           for i, d in members.dets.items()})
    again = fit_calibrators(scrambled, session, fold_a)
    for m in fitted:
        assert np.array_equal(fitted[m].apply(grid), again[m].apply(grid))
    # A perfectly separated sample maps below and above the cut.
    c = fit_calibrator(np.r_[np.linspace(0, .4, 30), np.linspace(.6, 1, 30)],
                       np.r_[np.full(30, FALSE_POSITIVE), np.full(30, TRUE_POSITIVE)])
    assert c.apply([0.1])[0] == 0 and c.apply([0.9])[0] == 1


def test_search_writes_its_outputs_and_resumes_without_repeating_trials(members, session, tmp_path):
    space = dict(method=['wbf', 'nms'], iou_thr=(0.4, 0.7), weights=(0.5, 2.0), score_thr=[0.0, 0.1],
                 calibrate=[False, True])
    logs = []
    best = run_search(members, session, space, str(tmp_path), n_trials=3, progress=False, log=logs.append)
    assert logs[-1] == '3 trials run'
    for name in ('study.db', 'leaderboard.csv', 'leaderboard.md', 'knobs.png', 'best_setting.json'):
        assert (tmp_path / name).is_file(), name
    again = run_search(members, session, space, str(tmp_path), n_trials=5, progress=False, log=logs.append)
    assert logs[-1] == '2 trials run now, 3 finished before (resumed)'
    assert again['fold_a'] >= best['fold_a']
    board = (tmp_path / 'leaderboard.csv').read_text().splitlines()
    assert sum(1 for line in board if line.startswith('trial ')) == 5
    assert sum(1 for line in board if line.startswith('single ')) == 3 and any('hand-set' in x for x in board)
    chosen = json.loads((tmp_path / 'best_setting.json').read_text())
    # The chosen setting scored again gives the numbers the study stored.
    setting = {k: v for k, v in chosen.items() if k not in ('trial', 'fold_a', 'fold_b')}
    cal = fit_calibrators(members, session, split_folds(members.sizes, 0)[0]) if setting['calibrate'] else None
    assert score_setting(setting, members, session, split_folds(members.sizes, 0), cal) == \
        (chosen['fold_a'], chosen['fold_b'])
    assert os.path.getsize(tmp_path / 'knobs.png') > 1000


def test_the_search_starts_from_the_hand_set_recipe(members, session, tmp_path):
    space = dict(method=['nms', 'wbf'], iou_thr=(0.4, 0.7), weights=(0.5, 2.0), score_thr=[0, 0.1],
                 max_per_img=(50, 200), nms_iou=[0.5, None], calibrate=[True, False])
    assert default_params(space, members.all_members) == {
        'method': 'wbf', 'iou_thr': 0.55, 'weight:a': 1.0, 'weight:b': 1.0, 'score_thr': 0, 'max_per_img': 120,
        'nms_iou': None, 'calibrate': False}
    # A default outside the space's values is left to the sampler; a fixed knob is no param.
    assert default_params(dict(method=['nms'], iou_thr=(0.6, 0.7), max_per_img=(50, 100), weights=1.5,
                               score_thr=[False]), ['a']) == {}
    best = run_search(members, session, space, str(tmp_path), n_trials=2, progress=False, log=quiet)
    rows = {r['name']: r for r in baselines(members, session, split_folds(members.sizes, 0))}
    study = open_study(f'sqlite:///{tmp_path / "study.db"}', STUDY_NAME)
    first = finished(study)[0]
    assert first.number == 0 and json.loads(first.user_attrs['setting']) == rows['hand-set (defaults)']['setting']
    assert (first.value, first.user_attrs['fold_b']) == (rows['hand-set (defaults)']['fold_a'],
                                                        rows['hand-set (defaults)']['fold_b'])
    assert best['fold_a'] >= first.value
    # The markdown board shows the recipe once, named as both; the CSV keeps a row for each.
    md = (tmp_path / 'leaderboard.md').read_text()
    assert md.count('| hand-set (defaults) = trial 0: ') == 1 and '| trial 0: ' not in md
    names = [line.split(',')[0] for line in (tmp_path / 'leaderboard.csv').read_text().splitlines()]
    assert 'hand-set (defaults)' in names and 'trial 0' in names
    # Resumed, the recipe is not queued again; a study that lost it (cut short) gets it back.
    assert start_from_defaults(study, space, members) == []
    fresh = optuna.create_study()
    assert start_from_defaults(fresh, space, members) == [default_params(space, members.all_members)]
    assert start_from_defaults(fresh, space, members) == []
