"""Shared-proposal fusion on slim random-weight detectors: one view is the model itself; mirrors,
self-ensembles and every model x view behave as the averaging promises."""
import re

import cv2
import numpy as np
import pytest
import torch
from _ensemble_helpers import (
    TINY_SCALE,
    damage,
    one_thread,
    shapes_image,
    shared,
    spread_heads,
    tiny_detector,
)

from mmdet_ext.ensemble import merge_proposals, view_specs

SMALL = (160, 128)   # views other than the config's own: small, to keep CPU time down
VIEWS = dict(scales=[SMALL, (192, 160)], flip=True)


@pytest.fixture(scope='module', autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope='module')
def model_a():
    return tiny_detector(seed=0)


@pytest.fixture(scope='module')
def model_b():
    return tiny_detector(seed=1)


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    """Two lossless images and the mirror of the first (PNG, so the mirror is exact)."""
    d = tmp_path_factory.mktemp('images')
    paths = []
    for seed in (3, 4):
        img = shapes_image(seed, width=230 - 40 * (seed - 3), height=150)
        paths.append(str(d / f'{seed}.png'))
        cv2.imwrite(paths[-1], img)
    mirror = str(d / 'mirror.png')
    cv2.imwrite(mirror, cv2.imread(paths[0])[:, ::-1])
    return paths + [mirror]


def assert_same_detections(a, b, box_tol=1e-4, score_tol=1e-4, mask_pixels=1e-3):
    assert len(a) == len(b) > 0
    assert torch.equal(a.labels, b.labels)
    assert torch.allclose(a.bboxes, b.bboxes, atol=box_tol, rtol=0)
    assert torch.allclose(a.scores, b.scores, atol=score_tol, rtol=0)
    assert a.masks.shape == b.masks.shape
    assert (a.masks != b.masks).sum() <= mask_pixels * max(1, int(a.masks.sum()))


def mirrored(dets, width):
    boxes = dets.bboxes.clone()
    boxes[:, 0], boxes[:, 2] = width - dets.bboxes[:, 2], width - dets.bboxes[:, 0]
    out = dets.clone()
    out.bboxes, out.masks = boxes, dets.masks.flip(-1)
    return out


def test_one_model_one_view_is_the_model(model_a, images):
    from mmdet.apis import inference_detector
    ensemble = shared([model_a], [TINY_SCALE])
    for path in images[:2]:
        ours = ensemble.predict(path)
        theirs = inference_detector(model_a, path).pred_instances
        assert_same_detections(ours, theirs)
        assert ours.masks.shape[-2:] == cv2.imread(path).shape[:2]


def test_mirrored_image_gives_mirrored_results(model_a, images):
    ensemble = shared([model_a], **VIEWS)
    original, mirror = ensemble.predict(images[0]), ensemble.predict(images[2])
    width = original.masks.shape[-1]
    # The mirror's views are the original's views in another order: sums differ in the last bits only.
    assert_same_detections(original, mirrored(mirror, width), box_tol=1e-3, score_tol=1e-5)


def test_model_with_itself_is_the_model(model_a, images):
    alone = shared([model_a], **VIEWS).predict(images[1])
    twice = shared([model_a, model_a], weights=[1, 3], **VIEWS).predict(images[1])
    assert_same_detections(alone, twice, box_tol=1e-4, score_tol=1e-6)


def test_every_model_and_view_contributes(model_a, model_b, images):
    path, views = images[1], dict(scales=[SMALL], flip=True)
    both = shared([model_a, model_b], **views).predict(path)
    b_changed = tiny_detector(seed=1)
    spread_heads(b_changed.roi_head.bbox_head[2], seed=7)     # only the last cascade stage of model B
    assert_differ(both, shared([model_a, b_changed], **views).predict(path))
    b_changed = tiny_detector(seed=1)
    spread_heads(b_changed.roi_head.mask_head[0], seed=7)     # only the first mask stage of model B
    other = shared([model_a, b_changed], **views).predict(path)
    assert torch.equal(both.scores, other.scores) and not torch.equal(both.masks, other.masks)
    assert_differ(both, shared([model_a], **views).predict(path))
    assert_differ(both, shared([model_a, model_b], scales=[SMALL]).predict(path))
    one_scale = shared([model_a], [SMALL]).predict(path)
    assert_differ(one_scale, shared([model_a], [SMALL, (192, 160)]).predict(path))


def test_a_view_and_its_mirror_batched_give_the_separate_views_detections(model_a, model_b, images):
    """One backbone call for the original and the mirrored view of a scale (the GPU default), forced here:
    the same detections as two calls, to float rounding."""
    path, views = images[1], dict(scales=[SMALL, (192, 160)], flip=True)
    apart = shared([model_a, model_b], **views, batch_views=False)
    together = shared([model_a, model_b], **views, batch_views=True)
    assert not apart.batch_views and together.batch_views
    assert_same_detections(apart.predict(path), together.predict(path))


def assert_differ(a, b):
    same = len(a) == len(b) and torch.equal(a.labels, b.labels) and torch.allclose(a.scores, b.scores) \
        and torch.allclose(a.bboxes, b.bboxes)
    assert not same


def test_proposals_merge_across_views_only():
    boxes = [torch.tensor([[0., 0, 10, 10], [0, 0, 10, 11]]),   # one view: overlapping pair, both kept
             torch.tensor([[0., 0, 10, 10.5], [50, 50, 60, 60]])]
    scores = [torch.tensor([0.9, 0.8]), torch.tensor([0.85, 0.1])]
    merged, s = merge_proposals(boxes, scores, iou_thr=0.7, max_num=10)
    assert s.tolist() == pytest.approx([0.9, 0.8, 0.1])   # the other view's duplicate went
    merged, s = merge_proposals(boxes, scores, iou_thr=0.7, max_num=2)
    assert s.tolist() == pytest.approx([0.9, 0.8])
    merged, s = merge_proposals(boxes, scores, iou_thr=0.7, max_num=10, within_views=True)
    assert s.tolist() == pytest.approx([0.9, 0.1])           # plain NMS prunes a view's own pairs too
    one_view, _ = merge_proposals(boxes[:1], scores[:1], iou_thr=0.7, max_num=10)
    assert torch.equal(one_view, boxes[0])


def test_views_map_boxes_both_ways(images):
    from mmdet_ext.ensemble import ViewMaker
    from mmdet_ext.launch import load_config
    views = ViewMaker(load_config('configs/tiny/cascade-mask-rcnn_r18-tiny_fpn_oid-leaf.py'),
                      view_specs([TINY_SCALE, (192, 160)], flip=True))(images[0])
    assert [(v.spec.scale, v.spec.flip) for v in views] == [
        (TINY_SCALE, False), (TINY_SCALE, True), ((192, 160), False), ((192, 160), True)]
    assert all('flip' not in v.metainfo for v in views)
    assert torch.equal(views[1].inputs, views[0].inputs.flip(-1))
    box = torch.tensor([[10., 20, 50, 70]])
    for v in views:
        assert torch.allclose(v.to_original(v.to_view(box)), box, atol=1e-4)
    h, w = views[1].metainfo['img_shape']
    sx, sy = views[1].metainfo['scale_factor']
    expected = torch.tensor([[w - 50 * sx, 20 * sy, w - 10 * sx, 70 * sy]])
    assert torch.allclose(views[1].to_view(box), expected, atol=1e-4)
    assert np.allclose(views[0].metainfo['ori_shape'], cv2.imread(images[0]).shape[:2])


@pytest.mark.parametrize('kind', ['truncated', 'garbage header', 'garbage data', 'text', 'empty', 'missing'])
def test_view_maker_names_an_unreadable_image(images, tmp_path, kind):
    """Every way an image file can be unusable is one UnreadableImage naming it; OpenCV would decode the
    truncated one and the one with a stray marker (garbled pixels, a warning on stderr)."""
    from mmdet_ext.ensemble import ViewMaker
    from mmdet_ext.ensemble.views import UnreadableImage
    from mmdet_ext.launch import load_config
    maker = ViewMaker(load_config('configs/tiny/cascade-mask-rcnn_r18-tiny_fpn_oid-leaf.py'),
                      view_specs([TINY_SCALE], flip=False))
    assert maker(images[0])[0].metainfo['ori_shape'] == cv2.imread(images[0]).shape[:2]
    path = str(tmp_path / 'x.jpg')
    if kind in ('truncated', 'garbage header', 'garbage data'):
        cv2.imwrite(path, cv2.imread(images[0]))           # a JPEG of the same picture
        damage(path, kind)
        if kind != 'garbage header':
            assert cv2.imread(path) is not None
    elif kind == 'text':
        open(path, 'w').write('not an image\n')
    elif kind == 'empty':
        open(path, 'wb').close()
    reason = 'image not found' if kind == 'missing' else r'(not a readable image|image does not decode) \('
    with pytest.raises(UnreadableImage, match=re.escape(path) + ': ' + reason):
        maker(path)
