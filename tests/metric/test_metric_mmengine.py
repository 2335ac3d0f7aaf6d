"""OIDChallengeMetric inside mmengine's Evaluator, fed real DetDataSamples: the command line's number."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _eval_files import write_dataset
from mmdet.structures import DetDataSample
from mmengine.evaluator import Evaluator
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

import mmdet_ext.challenge_metric  # noqa: F401  (registers OIDChallengeMetric)
from util.common.errors import DataError
from util.common.hierarchy import (
    DEFAULT_CLASSES,
    DEFAULT_HIERARCHY,
    load_default,
    read_class_names,
)
from util.common.mask_codec import encode_binary_batch, encode_mask
from util.metric.evaluate import evaluate_files


@pytest.fixture(scope='module', autouse=True)
def mmdet_scope():
    init_default_scope('mmdet')          # as a Runner does with default_scope='mmdet'


@pytest.fixture(scope='module')
def ds(tmp_path_factory):
    return write_dataset(str(tmp_path_factory.mktemp('oid_metric')), n_images=24, seed=11)


@pytest.fixture(scope='module')
def mids():
    return list(reversed(list(read_class_names())))     # the model's own class order


def metric_cfg(ds, **kw):
    return dict(type='OIDChallengeMetric', masks_csv=ds.path('masks.csv'), masks_dir=ds.path('masks'),
                bbox_csv=ds.path('bbox.csv'), labels_csv=ds.path('labels.csv'), hierarchy=DEFAULT_HIERARCHY,
                classes=DEFAULT_CLASSES, **kw)


def sample(image_id, size, preds, mids, as_rle=False):
    h, w = size
    s = DetDataSample(metainfo=dict(img_id=image_id, ori_shape=(h, w), img_shape=(h, w)))
    masks = np.stack([m for _, _, m in preds]).astype(bool) if preds else np.zeros((0, h, w), bool)
    inst = InstanceData()
    inst.labels = torch.tensor([mids.index(label) for label, _, _ in preds], dtype=torch.int64)
    inst.scores = torch.tensor([score for _, score, _ in preds], dtype=torch.float32)
    inst.bboxes = torch.zeros((len(preds), 4))
    if as_rle:
        inst.masks = [dict(size=r['size'], counts=r['counts'].encode()) for r in encode_binary_batch(masks)]
    else:
        inst.masks = torch.from_numpy(masks)
    s.pred_instances = inst
    return s


def run_metric(ds, mids, ids=None, predictions=None, batch=4, as_rle=False, **kw):
    evaluator = Evaluator(metric_cfg(ds, **kw))
    evaluator.dataset_meta = dict(classes=tuple(mids), mids=tuple(mids))
    predictions = predictions or ds.predictions
    ids = list(predictions) if ids is None else ids
    samples = [sample(i, ds.sizes[i], predictions[i], mids, as_rle) for i in ids]
    for k in range(0, len(samples), batch):
        evaluator.process(data_samples=samples[k:k + batch], data_batch=None)
    return evaluator.evaluate(len(samples))['oid/mAP@0.5IOU']


def cli_map(ds, submission, **kw):
    return evaluate_files(ds.path('masks.csv'), ds.path('masks'), ds.path('bbox.csv'), ds.path('labels.csv'),
                          DEFAULT_HIERARCHY, DEFAULT_CLASSES, submission, log=lambda *a, **k: None, **kw).mean_ap


def test_metric_equals_the_command_line(ds, mids):
    expected = cli_map(ds, ds.path('sub.csv'))
    assert run_metric(ds, mids) == expected
    assert run_metric(ds, mids, as_rle=True, workers=2) == expected
    assert 0.05 < expected < 0.95
    # The default is the official tie order (image ids travel with the results through the Metric);
    # FP-first is the opt-in, and the fixture's tied scores (k / 64) make the two differ.
    assert run_metric(ds, mids, ties='official') == expected
    fp_first = cli_map(ds, ds.path('sub.csv'), ties='fp-first')
    assert run_metric(ds, mids, workers=2, ties='fp-first') == fp_first != expected
    with pytest.raises(ValueError, match='fp-first'):
        Evaluator(metric_cfg(ds, ties='pessimistic'))


def test_only_images_with_predictions_are_evaluated(ds, mids):
    held_out = list(ds.predictions)[:10]
    sub = ds.write_submission('held_out.csv', ids=held_out)
    assert run_metric(ds, mids, ids=held_out) == cli_map(ds, sub, submitted_only=True)
    assert run_metric(ds, mids, ids=held_out) != cli_map(ds, sub)


def test_expand_predictions(ds, mids):
    hierarchy = load_default()
    leaves = set(hierarchy.leaves)
    leaf_preds = {i: [p for p in preds if p[0] in leaves] for i, preds in ds.predictions.items()}
    expanded = {i: [(label, s, encode_mask(m)) for lab, s, m in preds for label in hierarchy.expand(lab)]
                for i, preds in leaf_preds.items()}
    sub = ds.write_submission('expanded.csv', rows=expanded)
    got = run_metric(ds, mids, predictions=leaf_preds, expand_predictions=True)
    assert got == cli_map(ds, sub)
    assert got != run_metric(ds, mids, predictions=leaf_preds)     # not expanded by default


def test_masks_must_have_the_original_size(ds, mids):
    first = next(iter(ds.predictions))
    h, w = ds.sizes[first]
    bad = {first: [('/m/04yx4', 0.5, np.ones((h + 2, w), np.uint8))]}
    evaluator = Evaluator(metric_cfg(ds))
    evaluator.dataset_meta = dict(classes=tuple(mids), mids=tuple(mids))
    s = sample(first, (h + 2, w), bad[first], mids)
    s.set_metainfo(dict(ori_shape=(h, w)))
    with pytest.raises(DataError, match='ori_shape'):
        evaluator.process(data_samples=[s], data_batch=None)
