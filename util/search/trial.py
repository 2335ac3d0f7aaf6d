"""One setting of the knobs -> the predictions it makes from the cached member-views -> their mAP.

Per image, in this order (the order ``util.post.pipeline`` applies them): member scores calibrated
(optional), the member-views fused (``util.post.fuse.fuse_image``: WBF, vote or NMS, member weights),
score threshold, mask NMS (optional, voting optional), top ``max_per_img``, scores rounded as a submission
file writes them (``format_score``); the metric then copies every
detection to its ancestors when ``expand`` (as ``util.post.expand`` does). Everything a trial reads is
already in memory: the members' detections and the session's ground truth.

With a parent ensemble (``members.parent``) and ``combine`` on, the trial is the pipeline's leaf + parent
chain instead (``util.post.pipeline.chain_plan``), image by image, with the functions its steps run: the
leaf views fused as above -> leaf dets; the parent views fused the same way (same setting, the parent
members' weights) -> parent dets; both in the order the results -> CSV step writes them (best first,
stable); leaf dets expanded parents-only and parent dets expanded (``Expander.expand``), pooled in that
order and mask-NMS-merged (``nms_detections``: ``combine_iou``, ``combine_vote``); final = leaf dets +
survivors, capped at ``combine_max_dets`` (``cap_detections``; None: uncapped). ``max_per_img`` is each
ensemble's own cap, not the pipeline's ``--max-dets``. The metric then does not expand (the chain has).
``pipeline_command`` is the command line that runs the same chain on the written ensembles' results.

    setting_predictions(setting, members, image_ids, calibrators) -> {image_id: (labels, scores, masks)}
    score_setting(setting, members, session, folds, calibrators)  -> (mAP fold A, mAP fold B)
    combine_image(leaf, parent, height, width, hierarchy, ...)    -> the chain's final triples of one image
    pipeline_command(setting, hierarchy)                          -> ``python -m util.post.pipeline ...``

A session made with ``worker_data=members`` fuses in its workers (``produced_image``): nothing but the
setting travels, and the fusion (and the combine: ``members.parent`` travels with the members) runs on
every worker.
"""
from __future__ import annotations

from functools import lru_cache, partial

from ..common.hierarchy import DEFAULT_CLASSES, DEFAULT_HIERARCHY, Hierarchy
from ..common.submission import format_score
from ..post.combine import cap_detections
from ..post.expand import Expander
from ..post.fuse import FuseOptions, fuse_image
from ..post.mask_nms import nms_detections

COMBINE_KNOBS = ('combine', 'combine_iou', 'combine_vote', 'combine_max_dets')


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


def combines(setting: dict, members) -> bool:
    """Whether the setting runs the leaf + parent chain: ``combine`` on and a parent ensemble given."""
    return members.parent is not None and bool(setting.get('combine'))


def effective_setting(setting: dict, members) -> dict:
    """The setting as it runs on ``members``: without a parent ensemble the combine knobs mean nothing
    and are left out (so that a leaf-only search records what it did)."""
    if members.parent is not None:
        return setting
    return {k: v for k, v in setting.items() if k not in COMBINE_KNOBS}


@lru_cache(maxsize=None)
def chain_expanders(hierarchy: str = DEFAULT_HIERARCHY) -> tuple[Expander, Expander]:
    """(parents only, full) expanders of the chain, built as ``util.post.pipeline`` builds them; once per
    process."""
    tree = Hierarchy.from_json(hierarchy, DEFAULT_CLASSES)
    return Expander(tree, parents_only=True), Expander(tree, parents_only=False)


def as_written(dets: list) -> list:
    """An ensemble's triples in the order its results -> CSV step writes them (best first, stable): the
    chain's pooled order, and so its ties, are the pipeline's."""
    return sorted(dets, key=lambda d: -d[1])


def combine_image(leaf: list, parent: list, height: int, width: int, hierarchy: str = DEFAULT_HIERARCHY,
                  iou_thr: float = 0.5, vote: bool = False, max_dets: int | None = None, where: str = '',
                  memo=None) -> list:
    """The pipeline's chain on one image's leaf and parent triples (each as its CSV holds them): leaf
    expanded parents-only + parent expanded, mask NMS, then leaf + survivors, capped at ``max_dets``."""
    parents_only, full = chain_expanders(hierarchy)
    pooled = parents_only.expand(leaf, where) + full.expand(parent, where)
    survivors, _ = nms_detections(pooled, height, width, float(iou_thr), bool(vote), where, memo)
    return cap_detections(leaf + survivors, None if max_dets is None else int(max_dets))


def pipeline_command(setting: dict, hierarchy: str = DEFAULT_HIERARCHY) -> str:
    """The ``util.post.pipeline`` command line that runs the setting's combine on the results of the
    written leaf and parent ensembles (placeholders in capitals)."""
    parts = ['python -m util.post.pipeline --leaf-results LEAF_RESULTS_DIR --parent-results PARENT_RESULTS_DIR',
             '--ids SAMPLE_SUBMISSION_CSV --work WORK_DIR --out SUBMISSION_CSV',
             f'--iou-thr {float(setting["combine_iou"])!r}']
    if setting.get('combine_vote'):
        parts.append('--vote')
    if setting.get('combine_max_dets') is not None:
        parts.append(f'--max-dets {int(setting["combine_max_dets"])}')
    if hierarchy != DEFAULT_HIERARCHY:
        parts.append(f'--hierarchy {hierarchy}')
    return ' '.join(parts)


def fused_predictions(setting: dict, members, image_id: str, options: FuseOptions, calibrators=None) -> list:
    """One ensemble's fused (label, score, EncodedMask) triples of one image, best first."""
    height, width = members.sizes[image_id]
    per_view = members.dets[image_id]
    if setting.get('calibrate') and calibrators:
        per_view = [calibrated(dets, calibrators[members.member_of[k]]) for k, dets in enumerate(per_view)]
    return finish_fused(per_view, width, height, options, setting['score_thr'], setting.get('nms_iou'),
                        setting.get('vote'), setting['max_per_img'], f'image {image_id}', members.names,
                        members.ious(image_id))


def image_predictions(setting: dict, members, image_id: str, options: FuseOptions, calibrators=None,
                      parent_options: FuseOptions | None = None) -> list:
    """The setting's final (label, score, EncodedMask) triples of one image: the leaf ensemble's fused
    ones (best first), or with the combine on the chain's (leaf, then surviving parent detections)."""
    dets = fused_predictions(setting, members, image_id, options, calibrators)
    if not combines(setting, members):
        return dets
    parent = members.parent
    parent_dets = fused_predictions(setting, parent, image_id, parent_options or fuse_options(setting, parent),
                                    calibrators)
    height, width = members.sizes[image_id]
    return combine_image(as_written(dets), as_written(parent_dets), height, width, members.hierarchy,
                         setting['combine_iou'], setting['combine_vote'], setting.get('combine_max_dets'),
                         f'image {image_id}', members.ious(image_id, 'combine'))


def _options(setting: dict, members) -> tuple[FuseOptions, FuseOptions | None]:
    parent = fuse_options(setting, members.parent) if combines(setting, members) else None
    return fuse_options(setting, members), parent


def produced_image(setting: dict, calibrators, members, image_id: str):
    """One image's predictions of the setting, made where ``members`` are (a metric session's workers)."""
    options, parent_options = _options(setting, members)
    dets = image_predictions(setting, members, image_id, options, calibrators, parent_options)
    return tuple(zip(*dets)) if dets else ((), (), ())


def setting_predictions(setting: dict, members, image_ids, calibrators=None) -> dict:
    options, parent_options = _options(setting, members)
    out = {}
    for image_id in image_ids:
        dets = image_predictions(setting, members, image_id, options, calibrators, parent_options)
        out[image_id] = tuple(zip(*dets)) if dets else ((), (), ())
    return out


def score_setting(setting: dict, members, session, folds, calibrators=None) -> tuple[float, float]:
    """mAP of the setting on each fold. When the session's workers hold ``members`` (``worker_data``),
    they fuse their own images; otherwise both folds' images are fused here in one pass and sent. With the
    combine on, the chain has expanded: the metric does not."""
    expand = bool(setting.get('expand')) and not combines(setting, members)
    if getattr(session, 'worker_data', None) is members:
        produce = partial(produced_image, setting, calibrators)
        return tuple(session.evaluate(None, image_ids=fold, expand=expand, produce=produce).mean_ap
                     for fold in folds)
    preds = setting_predictions(setting, members, [i for fold in folds for i in fold], calibrators)
    return tuple(session.evaluate(preds, image_ids=fold, expand=expand).mean_ap for fold in folds)
