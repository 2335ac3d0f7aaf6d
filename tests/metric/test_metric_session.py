"""MetricSession: ground truth read once, then any number of evaluations with the command's numbers."""
from __future__ import annotations

import pytest
from _eval_files import write_dataset

from util.common.errors import DataError
from util.common.submission import iter_submission
from util.metric.evaluate import evaluate_files
from util.metric.rules import FALSE_POSITIVE, TRUE_POSITIVE
from util.metric.session import MetricSession


@pytest.fixture(scope='module')
def ds(tmp_path_factory):
    return write_dataset(str(tmp_path_factory.mktemp('oid_session')), n_images=30, seed=5)


def quiet(*args, **kwargs):
    pass


def session_of(ds, workers):
    return MetricSession(ds.path('masks.csv'), ds.path('masks'), ds.path('bbox.csv'), ds.path('labels.csv'),
                         ds.args()[9], ds.args()[11], dict(ds.sizes), workers=workers)


def predictions(ds):
    return {row.image_id: tuple(zip(*row.detections)) if row.detections else ((), (), ())
            for row in iter_submission(ds.path('sub.csv'))}


@pytest.mark.parametrize('workers', [1, 2])
def test_session_gives_the_commands_map_on_all_images_and_on_a_fold(ds, workers):
    whole = evaluate_files(ds.path('masks.csv'), ds.path('masks'), ds.path('bbox.csv'), ds.path('labels.csv'),
                           ds.args()[9], ds.args()[11], ds.path('sub.csv'), log=quiet)
    preds = predictions(ds)
    with session_of(ds, workers) as session:
        first = session.evaluate(preds)
        again = session.evaluate(preds)               # the ground truth is reused, nothing re-read
        assert first.mean_ap == whole.mean_ap == again.mean_ap
        fold = sorted(ds.sizes)[::2]
        sub = {i: preds[i] for i in fold if i in preds}
        path = ds.path('fold.csv')
        with open(ds.path('sub.csv')) as f, open(path, 'w') as g:
            lines = f.read().splitlines(True)
            g.write(lines[0] + ''.join(line for line in lines[1:] if line.split(',')[0] in set(fold)))
        folded = evaluate_files(ds.path('masks.csv'), ds.path('masks'), ds.path('bbox.csv'),
                                ds.path('labels.csv'), ds.args()[9], ds.args()[11], path, log=quiet,
                                submitted_only=True)
        assert session.evaluate(sub, image_ids=[i for i in fold if i in preds]).mean_ap == folded.mean_ap
        told = session.evaluate(preds, outcomes=True)
        assert told.mean_ap == whole.mean_ap
        tp = sum(int((codes == TRUE_POSITIVE).sum()) for _, _, codes in told.outcomes.values())
        fp = sum(int((codes == FALSE_POSITIVE).sum()) for _, _, codes in told.outcomes.values())
        assert tp > 0 and fp > 0
        with pytest.raises(DataError, match='not in the session'):
            session.evaluate(preds, image_ids=['nope'])


def test_images_without_ground_truth_are_ignored(ds):
    sizes = dict(ds.sizes, missing0000000000=(10, 10))
    with session_of(ds, 1) as plain, MetricSession(
            ds.path('masks.csv'), ds.path('masks'), ds.path('bbox.csv'), ds.path('labels.csv'), ds.args()[9],
            ds.args()[11], sizes) as more:
        assert 'missing0000000000' in more.without_gt
        preds = predictions(ds)
        a, b = plain.evaluate(preds, image_ids=list(ds.sizes)), more.evaluate(preds, image_ids=list(sizes))
        assert a.mean_ap == b.mean_ap and b.result.images_ignored == a.result.images_ignored + 1


def _shuffled(preds, seed):
    """The same detections with other scores and order: the masks recur, the result differs."""
    import numpy as np
    rng = np.random.default_rng(seed)
    out = {}
    for image_id, (labels, scores, masks) in preds.items():
        order = rng.permutation(len(labels)).tolist()
        out[image_id] = (tuple(labels[k] for k in order), tuple(float(rng.random()) for _ in order),
                         tuple(masks[k] for k in order))
    return out


@pytest.mark.parametrize('workers,cache_masks', [(1, 0), (2, 3), (2, 1024)])
def test_remembered_masks_give_the_numbers_of_a_fresh_evaluation(ds, workers, cache_masks):
    """Masks seen before (any cache size, evicted or not) score as a session that never saw them."""
    preds = predictions(ds)
    variants = [preds, _shuffled(preds, 1), _shuffled(preds, 2), preds]
    expected = []
    for v in variants:
        with session_of(ds, 1) as fresh:
            expected.append(fresh.evaluate(v, expand=True).mean_ap)
    assert len(set(expected[:3])) == 3                       # the variants do differ
    with MetricSession(ds.path('masks.csv'), ds.path('masks'), ds.path('bbox.csv'), ds.path('labels.csv'),
                       ds.args()[9], ds.args()[11], dict(ds.sizes), workers=workers,
                       cache_masks=cache_masks) as session:
        assert [session.evaluate(v, expand=True).mean_ap for v in variants] == expected
        # A broken mask is still caught after its image's other masks were remembered.
        image_id = next(i for i, p in preds.items() if len(p[0]) >= 2)
        labels, scores, masks = preds[image_id]
        bad = dict(preds)
        bad[image_id] = (labels, scores, (masks[0], masks[1][:-4] + 'AAAA') + tuple(masks[2:]))
        with pytest.raises(DataError, match=f'image {image_id}: detection 2: '):
            session.evaluate(bad)


def _twice(data, image_id):
    """Predictions made in the workers from their data: each image's own, scores halved."""
    labels, scores, masks = data[image_id]
    return labels, tuple(s / 2 for s in scores), masks


@pytest.mark.parametrize('workers', [1, 2])
def test_predictions_made_in_the_workers_score_as_sent_ones(ds, workers):
    preds = predictions(ds)
    halved = {i: _twice(preds, i) for i in preds}
    with MetricSession(ds.path('masks.csv'), ds.path('masks'), ds.path('bbox.csv'), ds.path('labels.csv'),
                       ds.args()[9], ds.args()[11], dict(ds.sizes), workers=workers, worker_data=preds) as s:
        made = s.evaluate(None, image_ids=sorted(preds), produce=_twice)
        sent = s.evaluate(halved, image_ids=sorted(preds))
    assert made.mean_ap == sent.mean_ap and made.result.detections.sum() == sent.result.detections.sum() > 0
