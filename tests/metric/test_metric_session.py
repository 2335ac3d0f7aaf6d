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
