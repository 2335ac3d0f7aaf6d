"""Federated training on the real slim cascade: box-only boxes are ignore regions for the RPN and every stage,
the federated loss is plain sigmoid CE when everything is verified and gives unverified classes no
gradient, test-time scores stay per-class probabilities in the C+1 layout, and the config trains."""
import pytest
import torch
from conftest import REPO, TINY_LEAF, run_cli
from mmengine.structures import InstanceData

from mmdet_ext.launch import load_config
from util.data.annotations import save_annotations
from util.data.build import build, make_source
from util.data.synthetic import generate

TINY_FED = 'configs/tiny/cascade-mask-rcnn_r18-tiny_fpn_oid-leaf_federated.py'
C = 275


def build_model(config, **loss_overrides):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = load_config(config)
    if loss_overrides:
        cfg.model.roi_head.loss_cls.update(loss_overrides)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model, cfg


@pytest.fixture(scope='module')
def fed_model():
    return build_model(TINY_FED)[0]


@pytest.fixture(scope='module')
def fed_data(tmp_path_factory):
    """Federated synthetic download + leaf annotation files with the federated fields (train) and without."""
    root = tmp_path_factory.mktemp('fed')
    generate(str(root), seed=1, train=16, val=4, test=1, federated=True, progress=False)
    split = 'challenge-2019-{}-segmentation-{}.csv'
    meta, train, _, _, _, _ = build([make_source(str(root / split.format('train', 'masks')))], 'leaf',
                                    img_root=str(root), progress=False,
                                    bbox_csvs=[str(root / split.format('train', 'bbox'))],
                                    labels_csvs=[str(root / split.format('train', 'labels'))])
    save_annotations(str(root / 'annotations/leaf-train.pkl'), meta, train)
    meta, val, _, _, _, _ = build([make_source(str(root / split.format('validation', 'masks')))], 'leaf',
                                  img_root=str(root), progress=False)
    save_annotations(str(root / 'annotations/leaf-val.pkl'), meta, val)
    return root


# ---- ignore regions ------------------------------------------------------------------------------------
def jittered(box, n, scale, seed):
    g = torch.Generator().manual_seed(seed)
    b = torch.tensor(box, dtype=torch.float32).repeat(n, 1)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    noise = (torch.rand(n, 4, generator=g) - 0.5) * scale
    return b + noise * torch.stack([w, h, w, h], 1)


def iof(boxes, region):
    from mmdet.structures.bbox import bbox_overlaps
    return bbox_overlaps(boxes, torch.tensor([region], dtype=torch.float32), mode='iof')[:, 0]


GT_BOX, BOX_ONLY = [20., 20., 100., 100.], [140., 140., 230., 230.]


def gt_sets(with_gt: bool):
    gt = InstanceData(bboxes=torch.tensor([GT_BOX] if with_gt else [], dtype=torch.float32).reshape(-1, 4),
                      labels=torch.tensor([3] if with_gt else [], dtype=torch.long))
    ignored = InstanceData(bboxes=torch.tensor([BOX_ONLY]), labels=torch.tensor([3]))   # same, annotated class
    return gt, ignored


def proposals():
    return torch.cat([jittered(BOX_ONLY, 300, 0.5, 0), jittered(GT_BOX, 100, 0.5, 1),
                      torch.tensor([[0., 0., 256., 256.], [150., 10., 250., 60.]])]).clamp(0, 256)


@pytest.mark.parametrize('with_gt', [True, False], ids=['with-gt', 'only-box-only'])
def test_box_only_box_never_gives_background_targets(fed_model, with_gt):
    """Every cascade stage (assigner, sampler, bbox head targets) and the RPN assigner: a RoI whose IoF with
    a box-only box exceeds the threshold is never a background target."""
    roi_head = fed_model.roi_head
    priors = proposals()
    covered = iof(priors, BOX_ONLY) > 0.5
    assert covered.sum() > 100
    gt, ignored = gt_sets(with_gt)
    for stage in range(roi_head.num_stages):
        assign = roi_head.bbox_assigner[stage].assign(InstanceData(priors=priors), gt, ignored)
        assert (assign.gt_inds[covered] == -1).all(), stage
        torch.manual_seed(stage)
        sampling = roi_head.bbox_sampler[stage].sample(assign, InstanceData(priors=priors), gt)
        labels = roi_head.bbox_head[stage].get_targets([sampling], roi_head.train_cfg[stage])[0]
        background = sampling.priors[labels == C]
        assert len(background) > 0
        assert not (iof(background, BOX_ONLY) > 0.5).any(), stage
        # mask targets come from positive RoIs only, and those match annotated (masked) boxes only
        assert not (iof(sampling.pos_priors, BOX_ONLY) > 0.5).any()
        if with_gt:
            assert (labels == 3).any()       # the annotated box still teaches its class
        else:
            assert len(sampling.pos_priors) == 0
    rpn_assign = fed_model.rpn_head.assigner.assign(InstanceData(priors=priors), gt, ignored)
    assert (rpn_assign.gt_inds[covered] == -1).all()


def test_plain_config_teaches_box_only_boxes_as_background():
    """The control: without ignore regions the same RoIs are background (what the federated config fixes)."""
    model, _ = build_model(TINY_LEAF)
    priors = proposals()
    covered = iof(priors, BOX_ONLY) > 0.5
    assign = model.roi_head.bbox_assigner[0].assign(InstanceData(priors=priors), *gt_sets(True))
    assert (assign.gt_inds[covered] == 0).any()


# ---- the loss ------------------------------------------------------------------------------------------
def loss_inputs(n=40, c=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, c, generator=g) * 2
    labels = torch.randint(0, c + 1, (n,), generator=g)     # c = background
    weights = torch.rand(n, generator=g) + 0.5
    return scores, labels, weights


def test_federated_loss_is_sigmoid_ce_when_everything_is_verified():
    from mmdet.models.losses import CrossEntropyLoss

    from mmdet_ext.models import FederatedSigmoidLoss
    scores, labels, weights = loss_inputs()
    plain = CrossEntropyLoss(use_sigmoid=True)
    fed = FederatedSigmoidLoss(num_sampled=5, freq_file=None, freq_subset='leaf')
    for avg in (None, 17.0):
        expected = plain(scores, labels, weights, avg_factor=avg)
        assert torch.allclose(fed(scores, labels, weights, avg_factor=avg), expected, atol=1e-6)
        every = torch.ones(scores.shape, dtype=torch.bool)
        assert torch.allclose(fed(scores, labels, weights, avg_factor=avg, image_classes=every), expected, atol=1e-6)


def test_unverified_class_gets_no_gradient():
    from mmdet_ext.models import FederatedSigmoidLoss
    scores, labels, weights = loss_inputs()
    n, c = scores.shape
    labels[labels == 4] = c           # class 4 is nobody's target...
    known = torch.ones(n, c, dtype=torch.bool)
    known[:, 4] = False               # ...and verified for no image
    known[: n // 2, 7] = False        # class 7: unverified for the first half's image only
    scores.requires_grad_(True)
    loss = FederatedSigmoidLoss(num_sampled=0)(scores, labels, weights, avg_factor=10.0, image_classes=known)
    loss.backward()
    grad = scores.grad
    assert (grad[:, 4] == 0).all()
    unverified7 = torch.arange(n) < n // 2
    assert (grad[unverified7 & (labels != 7), 7] == 0).all()
    assert (grad[~unverified7, 7] != 0).all()
    assert (grad[labels == 7, 7] != 0).all()          # a RoI's own class always counts
    assert (grad[:, [0, 1, 2, 3]] != 0).all()


def test_sample_is_seeded_frequency_weighted_and_outside_the_known_classes():
    from mmdet_ext.models import FederatedSigmoidLoss
    loss = FederatedSigmoidLoss(num_sampled=30, seed=3)
    known = torch.zeros(C, dtype=torch.bool)
    known[:10] = True
    draws = [loss.sample_classes(C, known) for _ in range(200)]
    assert all(int(d.sum()) == 30 and not d[:10].any() for d in draws)
    again = FederatedSigmoidLoss(num_sampled=30, seed=3)
    assert all(torch.equal(d, again.sample_classes(C, known)) for d in draws[:5])
    # frequency ** 0.5: the most frequent leaf classes are drawn more often than the rarest.
    freq = loss.sampling_weights(C)
    counts = torch.stack(draws).sum(0).float()
    order = torch.argsort(freq[10:], descending=True) + 10
    assert counts[order[:20]].mean() > 2 * counts[order[-20:]].mean()


def test_sample_follows_the_runner_iteration_and_frequencies_can_come_from_the_annotation_file(fed_data):
    from collections import Counter

    from mmengine.logging import MessageHub

    from mmdet_ext.models import FederatedSigmoidLoss
    from util.data.annotations import load_annotations
    ann = str(fed_data / 'annotations/leaf-train.pkl')
    counts = Counter(i['bbox_label'] for it in load_annotations(ann)['data_list'] for i in it['instances']
                     if not i['ignore_flag'])
    stages = [FederatedSigmoidLoss(num_sampled=3, freq_file=ann, seed=1) for _ in range(3)]
    freq = stages[0].sampling_weights(C)
    assert torch.allclose(freq, torch.tensor([counts.get(k, 0) ** 0.5 for k in range(C)], dtype=torch.float32))
    known = torch.zeros(C, dtype=torch.bool)
    hub = MessageHub.get_instance('federated-test')
    draws = set()
    for it in range(10):
        hub.update_info('iter', it)
        per_stage = [loss.sample_classes(C, known) for loss in stages]
        assert all(torch.equal(d, per_stage[0]) for d in per_stage)   # the three stages share the sample
        chosen = tuple(torch.nonzero(per_stage[0])[:, 0].tolist())
        assert len(chosen) == 3 and set(chosen) <= set(counts)         # only classes that occur
        draws.add(chosen)
    assert len(draws) > 1                                              # a new sample every iteration


# ---- the head, end to end ------------------------------------------------------------------------------
def real_batch(root, cfg, n=2):
    from mmengine.dataset import pseudo_collate

    from mmdet_ext.datasets import OIDInstanceDataset
    ds_cfg = cfg.train_dataloader.dataset
    ds = OIDInstanceDataset(data_root=str(root) + '/', ann_file='annotations/leaf-train.pkl', data_prefix=dict(img=''),
                            pipeline=ds_cfg.pipeline, filter_cfg=dict(min_size=0))
    # images with box-only boxes and with verified negatives first: what this is about
    order = sorted(range(len(ds)), key=lambda i: -sum(x['ignore_flag'] for x in ds.get_data_info(i)['instances']))
    return pseudo_collate([ds[i] for i in order[:n]])


def test_head_gives_unverified_classes_no_gradient_through_the_real_pipeline(fed_data):
    """One real training step: fc_cls rows of classes no image in the batch verified or annotated get no
    gradient (no sample), the others do; box-only boxes arrive as ignored instances."""
    model, cfg = build_model(TINY_FED, num_sampled=0)
    batch = real_batch(fed_data, cfg)
    samples = batch['data_samples']
    assert any(len(s.ignored_instances) for s in samples)
    assert all('verified_classes' in s.metainfo for s in samples)
    known = model.roi_head.known_classes(samples).any(0)
    assert 0 < int(known.sum()) < C
    model.train()
    data = model.data_preprocessor(batch, True)
    losses = model.loss(data["inputs"], data["data_samples"])
    model.parse_losses(losses)[0].backward()
    for head in model.roi_head.bbox_head:
        grad = head.fc_cls.weight.grad.abs().sum(1) + head.fc_cls.bias.grad.abs()
        assert (grad[~known] == 0).all()
        assert (grad[known] > 0).all()


def test_old_annotation_files_count_every_class_as_verified(synthetic_data):
    model, cfg = build_model(TINY_FED)
    batch = real_batch(synthetic_data, cfg)
    assert not any('verified_classes' in s.metainfo for s in batch['data_samples'])
    assert model.roi_head.known_classes(batch['data_samples']).all()


def test_test_time_scores_are_class_probabilities_in_the_c_plus_1_layout(fed_model):
    """The ensemble's path (stage-averaged logits -> predict_by_feat): C sigmoid columns + background."""
    from mmdet.structures.bbox import bbox2roi
    head = fed_model.roi_head
    fed_model.eval()
    feats = tuple(torch.randn(1, 64, 256 // s, 256 // s) for s in (4, 8, 16, 32, 64))
    props = proposals()[:20]
    meta = dict(img_shape=(256, 256), ori_shape=(256, 256), scale_factor=(1.0, 1.0))
    with torch.no_grad():
        rois, cls_scores, bbox_preds = head._refine_roi(feats, bbox2roi([props]), [meta], (len(props),))
        raw = head.bbox_head[-1].predict_by_feat(rois=rois, cls_scores=cls_scores, bbox_preds=bbox_preds,
                                                 batch_img_metas=[meta], rcnn_test_cfg=None)[0]
    assert raw.scores.shape == (20, C + 1)
    assert torch.allclose(raw.scores[:, :C], cls_scores[0].sigmoid())
    assert torch.allclose(raw.scores[:, C], 1 - raw.scores[:, :C].max(1)[0])
    # the prior: an untrained sigmoid head starts near 0.01 per class, not 0.5
    assert float(raw.scores[:, :C].mean()) < 0.05


# ---- training ------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize('which', ['federated-files', 'old-files'])
def test_federated_config_trains(fed_data, synthetic_data, tmp_path, which):
    root = fed_data if which == 'federated-files' else synthetic_data
    proc = run_cli(['tools/train.py', TINY_FED, '--work-dir', str(tmp_path / 'work'), '--cfg-options',
                    f'data_root={root}/', 'train_dataloader.dataset.index_file=None', 'default_hooks.logger.interval=1',
                    'train_cfg.max_iters=2', 'train_cfg.val_interval=2', 'val_dataloader.dataset.indices=1'],
                   cwd=REPO)
    log = proc.stdout + proc.stderr
    assert 'Iter(train) [2/2]' in log and 's2.loss_cls' in log
    assert 'oid/mAP@0.5IOU' in log
    assert (tmp_path / 'work' / 'iter_2.pth').is_file()
