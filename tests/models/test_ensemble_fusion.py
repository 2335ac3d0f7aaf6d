"""The fusions of ``FUSIONS`` on slim random-weight detectors of three kinds (Cascade Mask R-CNN, Mask
R-CNN, RTMDet-Ins): late fusion of one member and one view is that member, class-subset experts change their
own classes only, WBF is ensemble-boxes' own on the members' predictions, heterogeneous ensembles run
through shared proposals and late fusion."""
import warnings

import cv2
import numpy as np
import pytest
import torch
from _ensemble_helpers import (
    FEW_CLASSES,
    TINY_SCALE,
    one_thread,
    shapes_image,
    spread_heads,
    tiny_detector,
)
from ensemble_boxes import weighted_boxes_fusion

from mmdet_ext.ensemble import FUSIONS, ClassMap, Member, ViewSpec
from mmdet_ext.ensemble.late import ViewPrediction, fuse_wbf, predict_view

MASK_RCNN = 'configs/tiny/mask-rcnn_r18-tiny_fpn_oid-leaf.py'
RTMDET = 'configs/tiny/rtmdet-ins_tiny_oid-leaf.py'
ONE_VIEW = [ViewSpec(TINY_SCALE)]
FLIP_VIEWS = [ViewSpec(TINY_SCALE), ViewSpec((192, 160), True)]
SUBSET = [1, 5, 7, 9]          # the expert's classes, in the ensemble's list


@pytest.fixture(scope='module', autouse=True)
def _one_thread():
    with one_thread():
        yield


def slim(config: str, seed: int, options: dict):
    from mmdet.apis import init_detector

    from mmdet_ext.launch import load_config
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = init_detector(load_config(config, options), checkpoint=None, device='cpu')
    spread_heads(model, seed)
    return model


def mask_rcnn(seed: int, num_classes: int = FEW_CLASSES):
    return slim(MASK_RCNN, seed, {'model.roi_head.bbox_head.num_classes': num_classes,
                                  'model.roi_head.mask_head.num_classes': num_classes,
                                  'model.test_cfg.rcnn.max_per_img': 10})


def rtmdet(seed: int, num_classes: int = FEW_CLASSES):
    model = slim(RTMDET, seed, {'model.bbox_head.num_classes': num_classes, 'model.test_cfg.max_per_img': 10,
                                'model.test_cfg.score_thr': 0.0})
    with torch.no_grad():       # spread the dense head's class logits too (its layers are named rtm_cls)
        g = torch.Generator().manual_seed(seed)
        for name, p in model.bbox_head.named_parameters():
            if 'rtm_cls' in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


@pytest.fixture(scope='module')
def cascade():
    return tiny_detector(seed=0)


@pytest.fixture(scope='module')
def mrcnn():
    return mask_rcnn(seed=2)


@pytest.fixture(scope='module')
def dense():
    return rtmdet(seed=3)


@pytest.fixture(scope='module')
def image(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('fusion') / 'a.png')
    cv2.imwrite(path, shapes_image(5, width=230, height=150))
    return path


def build(kind, members, views=ONE_VIEW, num_classes=FEW_CLASSES, **params):
    settings = dict(score_thr=None, iou_thr=None, max_per_img=None, mask_thr=None)
    settings.update({k: params.pop(k) for k in list(params) if k in settings})
    return FUSIONS.build(dict(type=kind, **params),
                         default_args=dict(members=members, views=views, num_classes=num_classes, timer=None,
                                           **settings))


def own_prediction(model, path):
    from mmdet.apis import inference_detector
    return inference_detector(model, path).pred_instances


def assert_valid(dets, height, width, num_classes, max_per_img):
    assert 0 < len(dets) <= max_per_img
    assert dets.masks.dtype == torch.bool and dets.masks.shape == (len(dets), height, width)
    assert torch.all(dets.scores[:-1] >= dets.scores[1:])
    assert dets.labels.min() >= 0 and dets.labels.max() < num_classes
    assert torch.all(dets.bboxes[:, 2:] >= dets.bboxes[:, :2])
    assert dets.bboxes.min() >= -1e-3 and torch.all(dets.bboxes[:, 2] <= width + 1e-3)
    assert torch.all(dets.bboxes[:, 3] <= height + 1e-3)


@pytest.mark.parametrize('which', ['cascade', 'mrcnn', 'dense'])
def test_one_member_one_view_is_the_member(which, request, image):
    """WBF of one member's single view changes nothing: its own boxes, scores, labels and masks (R-CNN
    members re-segment their own boxes, so their masks are the model's own)."""
    model = request.getfixturevalue(which)
    theirs = own_prediction(model, image)
    ours = build('WBF', [Member(model)]).predict(image)
    assert len(ours) == len(theirs) > 0
    assert torch.equal(ours.labels, theirs.labels)
    assert torch.allclose(ours.bboxes, theirs.bboxes, atol=1e-3, rtol=0)
    assert torch.allclose(ours.scores, theirs.scores, atol=1e-6, rtol=0)
    assert (ours.masks != theirs.masks.bool()).sum() <= 1e-3 * max(1, int(theirs.masks.sum()))


def test_mask_rcnn_through_shared_proposals_is_itself(mrcnn, image):
    """Mask R-CNN's single RoI stage as a one-stage cascade: one view is the model's own prediction."""
    ours = build('SharedProposals', [Member(mrcnn)]).predict(image)
    theirs = own_prediction(mrcnn, image)
    assert len(ours) == len(theirs) > 0
    assert torch.equal(ours.labels, theirs.labels)
    assert torch.allclose(ours.bboxes, theirs.bboxes, atol=1e-4, rtol=0)
    assert torch.allclose(ours.scores, theirs.scores, atol=1e-5, rtol=0)
    assert (ours.masks != theirs.masks).sum() <= 1e-3 * max(1, int(theirs.masks.sum()))


@pytest.mark.parametrize('kind', ['SharedProposals', 'WBF'])
def test_cascade_and_mask_rcnn_together(kind, cascade, mrcnn, image):
    """A heterogeneous ensemble runs, and each member changes the result."""
    both = build(kind, [Member(cascade), Member(mrcnn)], FLIP_VIEWS).predict(image)
    assert_valid(both, 150, 230, FEW_CLASSES, 10)
    for alone in ([Member(cascade)], [Member(mrcnn)]):
        single = build(kind, alone, FLIP_VIEWS).predict(image)
        assert len(single) != len(both) or not torch.allclose(single.scores, both.scores)


@pytest.mark.parametrize('kind', ['WBF', 'NMS', 'SoftNMS'])
def test_late_fusions_give_valid_results(kind, cascade, mrcnn, dense, image):
    members = [Member(cascade), Member(mrcnn, weight=2.0), Member(dense)]
    # Untrained mask heads rarely pass 0.5; at threshold 0 every fused instance must get its region.
    dets = build(kind, members, FLIP_VIEWS, max_per_img=25, mask_thr=0.0).predict(image)
    assert_valid(dets, 150, 230, FEW_CLASSES, 25)
    assert dets.scores.max() <= 1 + 1e-6 and dets.scores.min() > 0
    assert bool(dets.masks.flatten(1).any(1).all())


def expert_of(model):
    """A 4-class expert that shares ``model``'s backbone, neck and RPN (so shared proposals see the same
    proposals) with heads of its own."""
    expert = tiny_detector(seed=11, num_classes=len(SUBSET))
    for part in ('backbone', 'neck', 'rpn_head'):
        getattr(expert, part).load_state_dict(getattr(model, part).state_dict())
    return expert


def by_class(dets, classes):
    rows = torch.isin(dets.labels, torch.tensor(classes))
    order = np.lexsort((dets.scores[rows].numpy(), dets.labels[rows].numpy()))
    return dets.bboxes[rows][order], dets.scores[rows][order], dets.masks[rows][order]


@pytest.mark.parametrize('kind', ['SharedProposals', 'WBF'])
def test_subset_expert_changes_only_its_classes(kind, cascade, image):
    expert = expert_of(cascade)
    others = [c for c in range(FEW_CLASSES) if c not in SUBSET]
    settings = dict(max_per_img=10000)
    alone = build(kind, [Member(cascade)], **settings).predict(image)
    with_expert = build(kind, [Member(cascade), Member(expert, class_index=SUBSET, name='expert')],
                        **settings).predict(image)
    boxes_a, scores_a, masks_a = by_class(alone, others)
    boxes_b, scores_b, masks_b = by_class(with_expert, others)
    assert len(scores_a) == len(scores_b) > 0
    assert torch.allclose(boxes_a, boxes_b, atol=1e-4) and torch.allclose(scores_a, scores_b, atol=1e-6)
    assert (masks_a != masks_b).sum() <= 1e-3 * max(1, int(masks_a.sum()))
    _, scores_a, _ = by_class(alone, SUBSET)
    _, scores_b, _ = by_class(with_expert, SUBSET)
    assert len(scores_a) != len(scores_b) or not torch.allclose(scores_a, scores_b, atol=1e-4)
    assert with_expert.labels.max() < FEW_CLASSES


@pytest.mark.parametrize('kind', ['SharedProposals', 'WBF'])
def test_class_lists_must_match_unless_declared(kind, cascade):
    small = tiny_detector(seed=4, num_classes=len(SUBSET))
    with pytest.raises(ValueError, match=r'expert predicts 4 classes, the ensemble 12: give its class_index'):
        build(kind, [Member(cascade), Member(small, name='expert')])
    with pytest.raises(ValueError, match=r'class_index has 3 entries for 4 classes'):
        build(kind, [Member(cascade), Member(small, class_index=SUBSET[:3])])
    with pytest.raises(ValueError, match=r'names an ensemble class twice'):
        build(kind, [Member(cascade), Member(small, class_index=[1, 1, 2, 3])])
    assert build(kind, [Member(cascade), Member(small, class_index=SUBSET)]).num_classes == FEW_CLASSES


def test_shared_proposals_refuse_a_single_stage_model(cascade, dense):
    with pytest.raises(ValueError, match='RTMDet has no RPN \\+ RoI head'):
        build('SharedProposals', [Member(cascade), Member(dense)])


def test_wbf_is_ensemble_boxes_on_the_members_predictions(cascade, mrcnn, dense, image):
    """The fused boxes and scores are ensemble-boxes' own, called on the member x views' predictions."""
    members = [Member(cascade, 1.0), Member(mrcnn, 0.5), Member(dense, 2.0)]
    fusion = build('WBF', members, FLIP_VIEWS, max_per_img=10000, score_thr=-1.0, fusion_iou=0.6)
    ours = fusion.predict(image)
    views = fusion.view_maker(image)
    height, width = views[0].metainfo['ori_shape']
    scale = np.array([width, height, width, height])
    boxes, scores, labels, weights = [], [], [], []
    with torch.no_grad():
        for k, m in enumerate(members):
            for view in views:
                pred, _ = predict_view(m, k, fusion.kinds[k], view, fusion.classes, 0.0)
                boxes.append(np.clip(pred.bboxes.numpy().astype(np.float64), 0, scale) / scale)
                scores.append(pred.scores.numpy())
                labels.append(pred.labels.numpy())
                weights.append(m.weight)
    b, s, lab = weighted_boxes_fusion(boxes, scores, labels, weights=weights, iou_thr=0.6,
                                      conf_type='box_and_model_avg')
    order = np.lexsort((b[:, 0], s))[::-1]
    mine = np.lexsort((ours.bboxes[:, 0].numpy() / width, ours.scores.numpy()))[::-1]
    assert len(ours) == len(s) > 10
    assert np.array_equal(ours.labels.numpy()[mine], lab[order].astype(np.int64))
    assert np.allclose(ours.scores.numpy()[mine], s[order], atol=1e-6)
    assert np.allclose(ours.bboxes.numpy()[mine], b[order] * scale, atol=1e-3)


def _prediction(boxes, scores, labels, member=0):
    return ViewPrediction(member, 1.0, torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores),
                          torch.tensor(labels), None)


@pytest.mark.parametrize('width,height', [(100, 300), (300, 100)])
def test_portrait_and_border_boxes_survive_normalisation(width, height, cascade):
    """Boxes touching every border of a portrait (or landscape) image come back in pixels unchanged; in
    pixels, ensemble-boxes would clip them all to [0, 1]."""
    boxes = [[0, 0, width, height], [10, height - 50, width, height], [0, 20, 40, height * 0.5]]
    pred = _prediction(boxes, [0.9, 0.8, 0.7], [0, 1, 2])
    fused, scores, labels = fuse_wbf([pred], ClassMap([Member(cascade)], FEW_CLASSES), width, height)
    assert torch.allclose(fused, torch.tensor(boxes, dtype=torch.float32), atol=1e-4)
    assert scores.tolist() == pytest.approx([0.9, 0.8, 0.7]) and labels.tolist() == [0, 1, 2]
    again = _prediction(boxes, [0.9, 0.8, 0.7], [0, 1, 2], member=1)
    twice, scores, _ = fuse_wbf([pred, again], ClassMap([Member(cascade)] * 2, FEW_CLASSES), width, height)
    assert torch.allclose(twice, fused, atol=1e-4) and scores.tolist() == pytest.approx([0.9, 0.8, 0.7])


def test_portrait_image_end_to_end(cascade, dense, tmp_path):
    path = str(tmp_path / 'portrait.png')
    img = shapes_image(6, width=120, height=260)
    cv2.rectangle(img, (0, 200), (119, 259), (250, 250, 250), -1)      # an object on two borders
    cv2.imwrite(path, img)
    dets = build('WBF', [Member(cascade), Member(dense)], FLIP_VIEWS).predict(path)
    assert_valid(dets, 260, 120, FEW_CLASSES, 10)


def test_htc_is_refused_by_shared_proposals_and_taken_by_late_fusion(cascade):
    """HTC's chained mask branch cannot re-segment shared boxes: refused with the reason; late fusion
    takes it as a member that brings its own masks."""
    import os

    import mmdet
    from mmdet.registry import MODELS
    from mmengine.config import Config
    cfg = Config.fromfile(os.path.join(os.path.dirname(mmdet.__file__),
                                       '.mim/configs/htc/htc-without-semantic_r50_fpn_1x_coco.py'))
    cfg.model.backbone.update(depth=18, init_cfg=None)
    cfg.model.neck.in_channels = [64, 128, 256, 512]
    for head in cfg.model.roi_head.bbox_head + cfg.model.roi_head.mask_head:
        head.num_classes = FEW_CLASSES
    htc = MODELS.build(cfg.model)
    htc.cfg = cascade.cfg                    # views from the slim test pipeline
    with pytest.raises(ValueError, match='HTC mask branch feeds each stage .* use a late fusion'):
        build('SharedProposals', [Member(cascade), Member(htc)])
    assert build('WBF', [Member(cascade), Member(htc)]).kinds == ['cascade', None]


@pytest.mark.parametrize('kind', ['SharedProposals', 'WBF'])
def test_split_prediction_is_the_prediction(kind, cascade, mrcnn, image):
    """The runner's pipelined path (``predict_views`` now, masks finished in another process) gives the
    bytes of ``predict``."""
    from mmdet_ext.ensemble.runner import PendingMasks, finish_masks
    fusion = build(kind, [Member(cascade), Member(mrcnn)], FLIP_VIEWS, mask_thr=0.3)
    whole = fusion.predict(image)
    split = finish_masks(fusion.predict_views(fusion.view_maker(image)))
    height, width = whole.masks.shape[-2:]
    expected = finish_masks(PendingMasks(whole.bboxes, whole.scores, whole.labels, height, width,
                                         masks=whole.masks))
    assert len(whole) > 0 and split == expected
