"""Each member x view on its own: the predictions a search caches and ``SubmissionFusion`` fuses.

A member x view's prediction is the member's own (mmdet's test path at that scale, mirrored back for a
flipped view): a one-member, one-view ``SharedProposals`` for R-CNN members, a one-member, one-view late
fusion (``WBF``, which then returns the member's own prediction) for the others.

``SubmissionFusion`` is the fusion a search chooses (``util.search``): every member x view predicts, its
detections become submission triples exactly as ``util.post.to_submission`` writes them (best first,
scores rounded as the file holds them, EncodedMask), and ``util.post.fuse.fuse_image`` fuses them with the
chosen method and weights; then score threshold, optional mask NMS (and voting), top ``max_per_img``. So
an ensemble config that names it predicts what the search scored from its cache, to the byte.

    view_name(spec)                                       '1333x800' or '1333x800-flip'
    member_view_ensembles(members, views, num_classes, ...) -> [(member name, view name, fusion)]
    cache_member_views(cfg, ann_file, images_dir, out_dir, ...) -> [(member, view, submission CSV)]
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from mmengine.structures import InstanceData

from util.common.mask_codec import decode_encoded, encode_binary_batch, rle_to_encoded
from util.common.submission import format_score
from util.post.fuse import FuseOptions

from .members import Member
from .views import ViewSpec


def view_name(spec: ViewSpec) -> str:
    return f'{spec.scale[0]}x{spec.scale[1]}' + ('-flip' if spec.flip else '')


def member_view_ensembles(members: Sequence[Member], views: Sequence[ViewSpec], num_classes: int,
                          max_per_img=None, mask_thr=None, iou_thr=None, timer=None) -> list:
    """One single-member, single-view fusion per member x view (member-major order). Each keeps every
    detection (score threshold 0) up to ``max_per_img``: thresholds are for the fused result."""
    from .fusion import FUSIONS
    out = []
    for i, member in enumerate(members):
        alone = Member(member.model, 1.0, member.class_index, member.name)
        for spec in views:
            args = dict(members=[alone], views=[spec], num_classes=num_classes, score_thr=0.0,
                        iou_thr=iou_thr, max_per_img=max_per_img, mask_thr=mask_thr, timer=timer)
            try:
                fusion = FUSIONS.build(dict(type='SharedProposals'), default_args=args)
            except ValueError:             # not an RPN + RoI-head model: its own predict, through late fusion
                fusion = FUSIONS.build(dict(type='WBF'), default_args=args)
            out.append((member.label(i), view_name(spec), fusion))
    return out


def submission_triples(dets: InstanceData, class_names: Sequence[str]) -> list[tuple[str, float, str]]:
    """A prediction as ``util.post.to_submission`` writes it: best first (stable), scores rounded."""
    labels, scores = dets.labels.tolist(), dets.scores.tolist()
    rles = encode_binary_batch(dets.masks.numpy()) if len(labels) else []
    order = sorted(range(len(scores)), key=lambda k: -scores[k])
    return [(class_names[labels[k]], float(format_score(scores[k])), rle_to_encoded(rles[k])) for k in order]


class SubmissionFusion:
    """Late fusion of the members' own predictions by ``util.post.fuse`` (see the module docstring).

    ``method`` / ``fusion_iou`` / ``conf_type`` / ``fusion_mask_thr``: ``util.post.fuse``'s; member weights
    apply to every view of the member; ``member_max_per_img``: the cap of each member x view's own
    prediction (a search writes the one its cache used; default: the member's config); ``calibration``: a
    file of ``util.search.calibrate`` (per-member score maps, applied before fusing); ``nms_iou`` /
    ``vote``: mask NMS after the fusion. ``score_thr`` and ``max_per_img`` apply to the fused result.
    """

    def __init__(self, members: Sequence[Member], views: Sequence[ViewSpec], num_classes: int,
                 class_names: Sequence[str] | None = None, score_thr=None, iou_thr=None, max_per_img=None,
                 mask_thr=None, timer=None, method: str = 'wbf', fusion_iou: float = 0.55,
                 conf_type: str = 'box_and_model_avg', fusion_mask_thr: float = 0.5, nms_iou=None,
                 vote: bool = False, calibration: str | None = None, member_max_per_img: int | None = None):
        from util.common.errors import DataError
        if class_names is None or len(class_names) != num_classes:
            raise ValueError('SubmissionFusion needs the ensemble\'s class names (the annotation file\'s)')
        self.class_names, self.num_classes = list(class_names), num_classes
        self.index = {mid: k for k, mid in enumerate(self.class_names)}
        self.parts = member_view_ensembles(members, views, num_classes, member_max_per_img, mask_thr, iou_thr,
                                           timer)
        weights = [float(m.weight) for m in members for _ in views]
        try:
            self.options = FuseOptions(method=method, weights=tuple(weights), iou_thr=float(fusion_iou),
                                       conf_type=conf_type, mask_thr=float(fusion_mask_thr)).checked(len(weights))
        except DataError as e:
            raise ValueError(str(e)) from None
        first = self.parts[0][2]
        self.score_thr = 0.0 if score_thr is None else float(score_thr)
        self.max_per_img = max_per_img if max_per_img is not None else getattr(first, 'max_per_img', 100)
        self.nms_iou, self.vote = nms_iou, bool(vote)
        self.calibrators = None
        if calibration is not None:
            from util.search.calibrate import load_calibrators
            self.calibrators = load_calibrators(calibration)
        self.view_maker = None

    @torch.no_grad()
    def predict(self, image, img_id=0) -> InstanceData:
        from util.search.trial import calibrated, finish_fused
        per_view, size = [], None
        for name, _, fusion in self.parts:
            dets = fusion.predict(image, img_id)
            size = tuple(dets.masks.shape[-2:])
            triples = submission_triples(dets, self.class_names)
            per_view.append(calibrated(triples, (self.calibrators or {}).get(name)))
        height, width = size
        fused = finish_fused(per_view, width, height, self.options, self.score_thr, self.nms_iou, self.vote,
                             self.max_per_img, f'image {img_id}')
        out = InstanceData()
        out.labels = torch.tensor([self.index[d[0]] for d in fused], dtype=torch.long)
        out.scores = torch.tensor([d[1] for d in fused], dtype=torch.float64)
        masks = np.zeros((len(fused), height, width), bool)
        from pycocotools import mask as mask_utils
        for k, d in enumerate(fused):
            masks[k] = mask_utils.decode(decode_encoded(d[2], height, width)).astype(bool)
        out.masks = torch.from_numpy(masks)
        out.bboxes = torch.zeros(len(fused), 4)
        return out


def cache_member_views(cfg, ann_file: str, images_dir: str, out_dir: str, device: str = 'cpu',
                       progress: bool = True, workers: int = 0, jobs: int = 1) -> list[tuple[str, str, str]]:
    """Every member x view of the ensemble config over the annotation file's images, once: a results file
    and a submission CSV each in ``out_dir`` (a finished one is reused, an interrupted one resumed). Each
    keeps its detections down to score 0, at most the ensemble's ``test_cfg.max_per_img`` (None: the
    member's config). ``jobs`` > 1 (CPU): the member-views predicted by that many processes side by side,
    each with its share of the cores (small models keep one core busy better than two)."""
    from util.data.annotations import load_annotations

    from .config import build_members, check_config
    check_config(cfg, cfg.filename or 'the ensemble')
    doc = load_annotations(ann_file)
    classes = doc['metainfo']['mids']
    os.makedirs(out_dir, exist_ok=True)
    members, views, test_cfg = build_members(cfg, classes, device)
    parts = member_view_ensembles(members, views, len(classes), test_cfg['max_per_img'], test_cfg['mask_thr'],
                                  test_cfg['iou_thr'])
    names = [(member, name) for member, name, _ in parts]
    stems = [os.path.join(out_dir, f'{member}@{name}') for member, name in names]
    todo = [k for k, stem in enumerate(stems) if not os.path.exists(stem + '.csv')]
    jobs = min(jobs, len(todo)) if device == 'cpu' else 1
    if jobs <= 1:
        for k in todo:
            _cache_part(parts[k][2], doc['data_list'], images_dir, stems[k], classes, progress, workers)
    else:
        del members, parts                                  # the pool's processes load their own
        _cache_in_pool(cfg, classes, device, doc['data_list'], images_dir, stems, todo, jobs, progress)
    return [(member, name, stem + '.csv') for (member, name), stem in zip(names, stems)]


def _cache_part(fusion, data_list, images_dir, stem, classes, progress=False, workers=0) -> None:
    from util.post.to_submission import results_to_submission

    from .runner import run_shard
    run_shard(fusion, data_list, images_dir, stem + '.jsonl.gz', classes, progress, workers=workers)
    results_to_submission(stem + '.jsonl.gz', stem + '.csv')


_POOL_PARTS: list = []          # a pool process's member-view ensembles


def _load_parts(cfg, classes, device, threads):
    from .config import build_members
    torch.set_num_threads(threads)
    members, views, test_cfg = build_members(cfg, classes, device)
    _POOL_PARTS[:] = member_view_ensembles(members, views, len(classes), test_cfg['max_per_img'],
                                           test_cfg['mask_thr'], test_cfg['iou_thr'])


def _pool_part(k, data_list, images_dir, stem, classes) -> None:
    _cache_part(_POOL_PARTS[k][2], data_list, images_dir, stem, classes)


def _cache_in_pool(cfg, classes, device, data_list, images_dir, stems, todo, jobs, progress) -> None:
    """The ``todo`` member-views over a spawned pool (forked torch thread pools can hang). A worker that
    dies is an error (BrokenProcessPool), not a wait; Ctrl-C or an error ends the pool's processes at once
    (their results files resume on the next run)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm import tqdm

    from util.common.workers import start_worker
    threads = max(1, (os.cpu_count() or 1) // jobs)
    pool = ProcessPoolExecutor(jobs, mp_context=mp.get_context('spawn'), initializer=start_worker,
                               initargs=(os.getpid(), _load_parts, (cfg, classes, device, threads)))
    try:
        tasks = [pool.submit(_pool_part, k, data_list, images_dir, stems[k], classes) for k in todo]
        for task in tqdm(as_completed(tasks), total=len(tasks), desc=f'member-views ({jobs} processes)',
                         disable=not progress):
            task.result()
    except BaseException:
        processes = list((getattr(pool, '_processes', None) or {}).values())     # shutdown forgets them
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:           # not left to finish their member-view (no public way to stop them)
            process.terminate()
        for process in processes:
            process.join(5)
        raise
    pool.shutdown()


def _register():
    from .fusion import FUSIONS
    if 'SubmissionFusion' not in FUSIONS.module_dict:
        FUSIONS.register_module('SubmissionFusion', module=SubmissionFusion)


_register()
