"""One setting of the knobs -> the predictions it makes from the cached member-views -> their mAP.

Per image, in this order (the order ``util.post.pipeline`` applies them): member scores calibrated
(optional), the member-views fused (``util.post.fuse.fuse_image``: WBF, vote or NMS, member weights),
score threshold, mask NMS (optional, voting optional), top ``max_per_img``, scores rounded as a submission
file writes them (``format_score``); the metric then copies every
detection to its ancestors when ``expand`` (as ``util.post.expand`` does). Everything a trial reads is
already in memory: the members' detections and the session's ground truth.

    setting_predictions(setting, members, image_ids, calibrators) -> {image_id: (labels, scores, masks)}
    score_setting(setting, members, session, folds, calibrators)  -> (mAP fold A, mAP fold B)

A session made with ``worker_data=members`` fuses in its workers (``produced_image``): nothing but the
setting travels, and the fusion runs on every worker.
"""
from __future__ import annotations

from functools import partial

from ..common.submission import format_score
from ..post.combine import cap_detections
from ..post.fuse import FuseOptions, fuse_image
from ..post.mask_nms import nms_detections


def fuse_options(setting: dict, members) -> FuseOptions:
    weights = tuple(float(setting['weights'][m]) for m in members.member_of)
    return FuseOptions(method=setting['method'], weights=weights, iou_thr=float(setting['iou_thr']),
                       conf_type=setting['conf_type'], mask_thr=float(setting['mask_thr'])).checked(len(weights))


def finish_fused(per_view: list, width: int, height: int, options: FuseOptions, score_thr: float,
                 nms_iou: float | None, vote: bool, max_per_img: int, where: str = '', names=None,
                 memo=None) -> list:
    """Member-view triples of one image -> the final (label, score, EncodedMask) triples, best first: fused,
    thresholded, mask NMS (optional), capped, scores rounded as a submission file holds them (so that the
    search scores what a run writes). The search's trials and ``SubmissionFusion`` both end here. ``memo``
    (``mask_nms.MaskIoUs``): the image's mask IoUs remembered from earlier trials."""
    fused = fuse_image(per_view, width, height, options,
                       (lambda t: f'{names[t]}: {where}') if names else (lambda t: f'input {t + 1}: {where}'), memo)
    fused = [d for d in fused if d[1] >= score_thr]
    if nms_iou is not None:
        fused, _ = nms_detections(fused, height, width, float(nms_iou), bool(vote), where, memo)
        fused = sorted(fused, key=lambda d: -d[1])
    fused = cap_detections(fused, int(max_per_img))
    return [(label, float(format_score(score)), enc) for label, score, enc in fused]


def calibrated(dets: list, calibrator) -> list:
    """Triples with their scores through a member's calibration map."""
    if not dets or calibrator is None:
        return dets
    scores = calibrator.apply([d[1] for d in dets])
    return [(label, float(s), enc) for (label, _, enc), s in zip(dets, scores)]


def image_predictions(setting: dict, members, image_id: str, options: FuseOptions, calibrators=None) -> list:
    """The setting's final (label, score, EncodedMask) triples of one image, best first."""
    height, width = members.sizes[image_id]
    per_view = members.dets[image_id]
    if setting.get('calibrate') and calibrators:
        per_view = [calibrated(dets, calibrators[members.member_of[k]]) for k, dets in enumerate(per_view)]
    return finish_fused(per_view, width, height, options, setting['score_thr'], setting.get('nms_iou'),
                        setting.get('vote'), setting['max_per_img'], f'image {image_id}', members.names,
                        members.ious(image_id))


def produced_image(setting: dict, calibrators, members, image_id: str):
    """One image's predictions of the setting, made where ``members`` are (a metric session's workers)."""
    dets = image_predictions(setting, members, image_id, fuse_options(setting, members), calibrators)
    return tuple(zip(*dets)) if dets else ((), (), ())


def setting_predictions(setting: dict, members, image_ids, calibrators=None) -> dict:
    options = fuse_options(setting, members)
    out = {}
    for image_id in image_ids:
        dets = image_predictions(setting, members, image_id, options, calibrators)
        out[image_id] = tuple(zip(*dets)) if dets else ((), (), ())
    return out


def score_setting(setting: dict, members, session, folds, calibrators=None) -> tuple[float, float]:
    """mAP of the setting on each fold. When the session's workers hold ``members`` (``worker_data``),
    they fuse their own images; otherwise both folds' images are fused here in one pass and sent."""
    expand = bool(setting.get('expand'))
    if getattr(session, 'worker_data', None) is members:
        produce = partial(produced_image, setting, calibrators)
        return tuple(session.evaluate(None, image_ids=fold, expand=expand, produce=produce).mean_ap
                     for fold in folds)
    preds = setting_predictions(setting, members, [i for fold in folds for i in fold], calibrators)
    return tuple(session.evaluate(preds, image_ids=fold, expand=expand).mean_ap for fold in folds)
