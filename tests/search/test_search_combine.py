"""The leaf + parent combine as a knob of the search: a trial with the combine on is the number of
util.post.pipeline's chain (expand parents-only, expand, mask NMS, combine) on the same fused predictions,
to the last digit; with it off (or without a parent ensemble) it is the leaf-only trial; the reference rows
and the winner say how to reproduce it."""
from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
from _eval_files import write_dataset

from util.common.errors import DataError
from util.common.hierarchy import DEFAULT_CLASSES, DEFAULT_HIERARCHY, Hierarchy, class_list
from util.common.mask_codec import encode_mask
from util.common.submission import iter_submission
from util.metric.evaluate import evaluate_files
from util.metric.session import MetricSession
from util.post.combine import combine_leaf_and_parent
from util.post.expand import Expander, expand_submission
from util.post.mask_nms import mask_nms_submissions
from util.search.members import MemberSet, split_folds
from util.search.space import DEFAULTS
from util.search.study import baselines, run_search, start_from_defaults
from util.search.trial import effective_setting, pipeline_command, score_setting, setting_predictions

LEAF, PARENT = set(class_list('leaf')), set(class_list('parent25'))
WEIGHTS = {'a': 1.0, 'b': 2.0, 'p': 1.5}


def member_rows(ds, rng, k, classes):
    """One member-view's predictions: the dataset's of ``classes``, thinned, rescored, shifted a pixel, a
    tenth of their pixels dropped (so that a voted mask differs from its anchor)."""
    return {image_id: [(label, float(np.clip(score * (0.6 + 0.2 * k) + rng.normal(0, 0.1), 0.01, 1)),
                        encode_mask(np.roll(mask, k - 1, axis=1) & (rng.random(mask.shape) >= 0.1)))
                       for label, score, mask in dets if label in classes and rng.random() < 0.85]
            for image_id, dets in ds.predictions.items()}


@pytest.fixture(scope='module')
def ds(tmp_path_factory):
    ds = write_dataset(str(tmp_path_factory.mktemp('oid_combine')), n_images=40, seed=11)
    rng = np.random.default_rng(0)
    for k in range(3):                          # leaf members a (two views) and b
        ds.write_submission(f'm{k}.csv', member_rows(ds, rng, k, LEAF))
    for k in range(2):                          # the parent member p, two views
        ds.write_submission(f'p{k}.csv', member_rows(ds, rng, k, PARENT))
    return ds


def leaf_members(ds):
    return MemberSet.from_files([('a', 'v0', ds.path('m0.csv')), ('a', 'v1', ds.path('m1.csv')),
                                 ('b', 'v0', ds.path('m2.csv'))])


def parent_members(ds):
    return MemberSet.from_files([('p', 'v0', ds.path('p0.csv')), ('p', 'v1', ds.path('p1.csv'))])


@pytest.fixture(scope='module')
def members(ds):
    return leaf_members(ds).with_parent(parent_members(ds), DEFAULT_HIERARCHY)


@pytest.fixture(scope='module')
def session(ds, members):
    with MetricSession(ds.path('masks.csv'), ds.path('masks'), ds.path('bbox.csv'), ds.path('labels.csv'),
                       ds.args()[9], ds.args()[11], dict(members.sizes), workers=2, worker_data=members) as s:
        yield s         # its workers hold the leaf and the parent members: trials fuse and combine there


def quiet(*args, **kwargs):
    pass


def written(ds, path, preds, ids):
    """Predictions as the results -> CSV step writes them: best first (stable), scores in 6 digits."""
    rows = {i: sorted(zip(*preds[i]), key=lambda d: -d[1]) if preds[i][0] else [] for i in ids}
    return ds.write_submission(str(path), rows, ids)


@pytest.mark.parametrize('method,vote,max_dets', [('wbf', False, None), ('wbf', True, None), ('nms', True, 12),
                                                  ('vote', False, 12)])
def test_a_combined_trial_equals_the_pipelines_chain_and_the_evaluator(ds, members, session, tmp_path, method,
                                                                       vote, max_dets):
    setting = dict(DEFAULTS, method=method, weights=WEIGHTS, iou_thr=0.5, max_per_img=25, combine=True,
                   combine_iou=0.5, combine_vote=vote, combine_max_dets=max_dets)
    fold = split_folds(members.sizes, 0)[1]
    # The two ensembles' fused predictions, each alone, as CSVs (the pipeline's leaf_csv and parent_csv) ...
    leaf = written(ds, tmp_path / 'leaf.csv', setting_predictions(dict(setting, combine=False), members, fold), fold)
    parent = written(ds, tmp_path / 'parent.csv', setting_predictions(setting, members.parent, fold), fold)
    # ... through the pipeline's steps, as chain_plan runs them, and scored from the file.
    tree = Hierarchy.from_json(DEFAULT_HIERARCHY, DEFAULT_CLASSES)
    p = {name: str(tmp_path / f'{name}.csv') for name in ('leaf_parents', 'parent_expanded', 'parent_nms', 'combined')}
    expand_submission(leaf, p['leaf_parents'], Expander(tree, parents_only=True))
    expand_submission(parent, p['parent_expanded'], Expander(tree, parents_only=False))
    nms = mask_nms_submissions([p['leaf_parents'], p['parent_expanded']], p['parent_nms'], 0.5, vote)
    combine_leaf_and_parent(leaf, [p['parent_nms']], p['combined'], max_dets=max_dets)
    assert nms.detections_out < nms.detections_in          # the NMS merged something
    if vote:                                                # and voted masks that differ from their anchors
        unvoted = setting_predictions(dict(setting, combine_vote=False), members, fold)
        assert nms.voted > 0 and unvoted != setting_predictions(setting, members, fold)
    expected = evaluate_files(ds.path('masks.csv'), ds.path('masks'), ds.path('bbox.csv'), ds.path('labels.csv'),
                              ds.args()[9], ds.args()[11], p['combined'], log=quiet, submitted_only=True).mean_ap
    preds = setting_predictions(setting, members, fold)
    # The trial's detections are the combined file's, in its order (voted masks included), ...
    rows = {row.image_id: row.detections for row in iter_submission(p['combined'])}
    assert {i: list(zip(*preds[i])) for i in fold} == {i: [tuple(d) for d in rows[i]] for i in fold}
    # ... and so is the mAP.
    assert session.evaluate(preds, image_ids=fold).mean_ap == expected             # fused here, sent
    assert score_setting(setting, members, session, ([], fold))[1] == expected      # fused in the workers
    # Not a trivial equality: the combine moves the number.
    assert score_setting(dict(setting, combine=False), members, session, ([], fold))[1] != expected


def test_combine_off_is_the_leaf_only_trial(ds, members, session):
    alone = leaf_members(ds)                      # no parent ensemble at all
    folds = split_folds(members.sizes, 0)
    for setting in (dict(DEFAULTS, weights=WEIGHTS, combine=False),
                    dict(DEFAULTS, weights=WEIGHTS, method='nms', nms_iou=0.5, combine=False, expand=False)):
        assert setting_predictions(setting, members, folds[1]) == setting_predictions(setting, alone, folds[1])
        assert score_setting(setting, members, session, folds) == score_setting(setting, alone, session, folds)
        # Without a parent ensemble, combine on is ignored: the same trial, recorded without the combine.
        on = dict(setting, combine=True)
        assert setting_predictions(on, alone, folds[1]) == setting_predictions(setting, alone, folds[1])
        assert 'combine' not in effective_setting(on, alone) and effective_setting(on, members) == on


def test_the_parent_ensemble_must_match_the_leaf_members(ds):
    with pytest.raises(DataError, match="cache/parent: member 'a' is also a leaf member"):
        leaf_members(ds).with_parent(MemberSet.from_files([('a', 'v9', ds.path('p0.csv'))]), what='cache/parent')
    fewer = ds.write_submission('p_fewer.csv', {i: [] for i in ds.sizes}, ids=list(ds.sizes)[1:])
    with pytest.raises(DataError, match=f'P: no predictions of image {list(ds.sizes)[0]}'):
        leaf_members(ds).with_parent(MemberSet.from_files([('p', 'v0', fewer)]), what='P')
    other = MemberSet.from_files([('p', 'v0', ds.path('p0.csv'))])
    first = list(other.sizes)[0]
    other.sizes[first] = (other.sizes[first][0] + 1, other.sizes[first][1])
    with pytest.raises(DataError, match=f'P: image {first} is'):
        leaf_members(ds).with_parent(other, what='P')


def test_the_pipeline_command_states_the_combine():
    s = dict(DEFAULTS, combine_iou=0.625, combine_vote=True, combine_max_dets=150)
    assert pipeline_command(s).endswith('--iou-thr 0.625 --vote --max-dets 150')
    assert pipeline_command(DEFAULTS).endswith('--out SUBMISSION_CSV --iou-thr 0.5')
    assert pipeline_command(DEFAULTS, 'h.json').endswith('--iou-thr 0.5 --hierarchy h.json')


def test_search_with_a_parent_ensemble_rows_and_winner(members, session, tmp_path):
    space = dict(method=['wbf'], weights=(0.5, 2.0), combine=[True], combine_iou=(0.4, 0.7),
                 combine_vote=[False, True], calibrate=[True])
    logs = []
    best = run_search(members, session, space, str(tmp_path), n_trials=2, progress=False, log=logs.append)
    assert 'parent ensemble: 2 member-views of 1 members' in logs[0]
    board = (tmp_path / 'leaderboard.csv').read_text().splitlines()
    names = [line.split(',')[0] for line in board[1:]]
    assert {'hand-set (defaults)', 'hand-set + parent combine (defaults)'} <= set(names)
    assert sum(n.startswith('single ') for n in names) == 3          # the leaf member-views only
    chosen = json.loads((tmp_path / 'best_setting.json').read_text())
    assert chosen == best and set(chosen['weights']) == {'a', 'b', 'p'} and chosen['combine'] is True
    assert chosen['pipeline'] == pipeline_command(chosen)
    assert set(json.loads((tmp_path / 'calibration.json').read_text())) == {'a', 'b', 'p'}
    rows = {r['name']: r for r in baselines(members, session, split_folds(members.sizes, 0))}
    assert rows['hand-set + parent combine (defaults)']['setting']['combine'] is True
    assert rows['hand-set (defaults)']['setting']['combine'] is False


def test_with_a_parent_ensemble_the_search_starts_from_both_hand_set_recipes(members):
    space = dict(method=['wbf', 'nms'], weights=(0.5, 2.0), combine=[True, False])
    leaf_only = dict(method='wbf', combine=False, **{f'weight:{m}': 1.0 for m in ('a', 'b', 'p')})
    assert start_from_defaults(optuna.create_study(), space, members) == [dict(leaf_only, combine=True), leaf_only]
