"""Choose an ensemble's fusion, weights and post-processing on the validation split; write the winner.

    python tools/ensemble_search.py configs/ensemble/demo-leaf.py --space configs/search/demo.py \\
        --ann-file VAL.pkl --images-dir VAL_IMAGES --out work_dirs/search --trials 40 \\
        --masks-csv ...-validation-segmentation-masks.csv --masks-dir D --bbox-csv ... --labels-csv ... \\
        [--checkpoints A B] [--cfg-options ...] [--extra NAME=SUBMISSION.csv ...] [--seed 0] [--grid]
        [--parent-config configs/ensemble/demo-parent.py --parent-ann-file VAL_PARENT.pkl [--parent-checkpoints P]]

1. Every member x view of the ensemble predicts the validation images once (OUT/cache/, resumable); with
   ``--parent-config`` the parent ensemble's member x views too (OUT/cache/parent/), on the same images:
   ``--parent-ann-file`` (its parent classes) must list every image of ``--ann-file`` with the same size;
   OUT/cache/parent/images.pkl is the parent classes over exactly those images. The search can then
   combine the two as ``util.post.pipeline`` does (knobs ``combine``, ``combine_iou``, ...).
2. The ground truth is read once (``util.metric.session``); the images are split into folds A and B.
3. An Optuna study (OUT/study.db: rerun the same command to resume it, or to add trials) scores each
   setting on both folds; settings are chosen on fold A.
4. OUT/leaderboard.csv and .md (with each member-view alone, the defaults and any ``--extra``
   submission, e.g. the shared-proposal fusion, as reference rows), OUT/knobs.png, OUT/best_setting.json,
   and OUT/best_ensemble.py: the winner as an ensemble config (``SubmissionFusion``) that
   ``tools/ensemble_test.py`` runs on the test shards (expand its output when ``best_setting.json`` says
   expand, as ``util.post.pipeline`` does for the leaf model). When the winner combines: also
   OUT/best_parent_ensemble.py (the parent ensemble with its chosen weights, for the parent shards), and
   ``best_setting.json``'s ``pipeline`` (also in both configs' comments) is the ``util.post.pipeline``
   command line that combines the two ensembles' results as the search scored it.
"""
import argparse
import json
import os
import sys
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

import mmdet_ext  # noqa: E402,F401  (registers the project's modules)
from mmdet_ext.ensemble.config import apply_flags, load_ensemble_config, member_name  # noqa: E402
from mmdet_ext.ensemble.member_views import cache_member_views  # noqa: E402
from mmdet_ext.launch import parse_cfg_options  # noqa: E402
from util.common.atomic import AtomicWriter  # noqa: E402
from util.common.cli import add_progress_flag, interrupt_of, run  # noqa: E402
from util.common.errors import DataError  # noqa: E402
from util.common.hierarchy import DEFAULT_CLASSES, DEFAULT_HIERARCHY  # noqa: E402
from util.common.submission import SubmissionError, iter_submission  # noqa: E402
from util.data.annotations import load_annotations, save_annotations  # noqa: E402
from util.metric.session import MetricSession  # noqa: E402
from util.search.members import MemberSet  # noqa: E402
from util.search.space import load_space  # noqa: E402
from util.search.study import STUDY_NAME, finished, run_search  # noqa: E402
from util.search.trial import chain_expanders  # noqa: E402

PARENT_WINNER = 'best_parent_ensemble.py'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('config', help='ensemble config file (configs/ensemble/)')
    p.add_argument('--space', required=True, help='search space file (configs/search/)')
    p.add_argument('--ann-file', required=True, help='validation annotation file (.pkl/.json)')
    p.add_argument('--images-dir', required=True, help="folder of the annotation file's img_path")
    p.add_argument('--out', required=True, help='output folder (cache, study, leaderboard, winner)')
    p.add_argument('--trials', type=int, default=30, help='finished trials the study should hold (default 30)')
    p.add_argument('--seed', type=int, default=0, help='seed of the sampler and of the fold split')
    p.add_argument('--grid', action='store_true', help='grid sampler (every knob a list) instead of TPE')
    p.add_argument('--checkpoints', nargs='+', help="replace the members' checkpoints, in order")
    p.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE')
    p.add_argument('--extra', nargs='+', default=[], metavar='NAME=CSV',
                   help='submissions of the same images to score on both folds as reference rows')
    p.add_argument('--parent-config', help='parent ensemble config: the search may combine it with the leaf '
                   'ensemble as util.post.pipeline does (needs --parent-ann-file)')
    p.add_argument('--parent-ann-file', help="a parent-class annotation file (.pkl/.json) listing every image of "
                   "--ann-file, with the same sizes (e.g. a parent shard of the validation folder)")
    p.add_argument('--parent-checkpoints', nargs='+', help="replace the parent members' checkpoints, in order")
    for name, what in (('masks-csv', 'validation masks CSV'), ('masks-dir', 'folder of the mask PNGs'),
                       ('bbox-csv', 'validation bbox CSV'), ('labels-csv', 'validation image labels CSV')):
        p.add_argument(f'--{name}', required=True, help=what)
    p.add_argument('--hierarchy', default=DEFAULT_HIERARCHY)
    p.add_argument('--classes', default=DEFAULT_CLASSES)
    p.add_argument('--workers', type=int, default=2, help='metric worker processes, which also fuse the trials (default 2)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--jobs', type=int, default=1, help='CPU: processes that predict the member-views side by '
                   'side, each with its share of the cores (default 1)')
    add_progress_flag(p)
    args = p.parse_args(argv)
    if (args.parent_config is None) != (args.parent_ann_file is None):
        p.error('--parent-config and --parent-ann-file go together')
    if args.jobs < 1:
        p.error('--jobs must be at least 1')
    if args.parent_checkpoints and args.parent_config is None:
        p.error('--parent-checkpoints needs --parent-config')
    return args


def _sizes(ann_file: str, items: list) -> dict:
    """img_id -> (height, width); a malformed item is one line naming the file."""
    try:
        return {str(d['img_id']): (int(d['height']), int(d['width'])) for d in items}
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f'{ann_file}: an image item without img_id, height and width ({type(e).__name__}: {e})') \
            from None


def parent_images(ann_file: str, parent_ann_file: str, out: str) -> str:
    """The annotation file the parent ensemble predicts: the parent file's classes (metainfo) over exactly
    the leaf file's images (ids, sizes, paths under the one --images-dir), written to ``out``. Every leaf
    image must be in the parent file with the same size (the same validation images); images only the
    parent file lists (e.g. a parent-class shard of the whole validation folder) are not predicted."""
    leaf_doc, parent_doc = load_annotations(ann_file), load_annotations(parent_ann_file)
    shared = [m for m in parent_doc['metainfo']['mids'] if m in set(leaf_doc['metainfo']['mids'])]
    if shared:
        raise DataError(f'{parent_ann_file}: class {shared[0]} is also a class of {ann_file} ({len(shared)} shared); '
                        'the parent annotation file must hold the parent classes (util.data.shards --subset parent)')
    leaf, parent = _sizes(ann_file, leaf_doc['data_list']), _sizes(parent_ann_file, parent_doc['data_list'])
    missing = [i for i in leaf if i not in parent]
    if missing:
        raise DataError(f'{parent_ann_file}: lacks image {missing[0]} of {ann_file} ({len(missing)} missing; the '
                        'parent annotation file must list every validation image of the leaf one)')
    for image_id, size in leaf.items():
        if parent[image_id] != size:
            h, w = parent[image_id]
            raise DataError(f'{parent_ann_file}: image {image_id} is {w}x{h} (WxH), {ann_file} says '
                            f'{size[1]}x{size[0]}')
    items = [dict(img_id=d['img_id'], img_path=d['img_path'], height=d['height'], width=d['width'], instances=[])
             for d in leaf_doc['data_list']]
    os.makedirs(os.path.dirname(out), exist_ok=True)
    save_annotations(out, parent_doc['metainfo'], items)
    return out


def check_unique_members(config: str, cfg, parent_config: str, parent_cfg) -> None:
    """Weights (``weight:<name>``) and calibration maps are keyed by member name, across both ensembles."""
    leaf = {member_name(m) for m in cfg.members}
    for m in parent_cfg.members:
        if member_name(m) in leaf:
            raise DataError(f'{parent_config}: member {member_name(m)!r} is also a member of {config}; give '
                            "the parent members other names (name='...')")


def read_predictions(path: str) -> dict:
    try:
        return {row.image_id: tuple(zip(*row.detections)) if row.detections else ((), (), ())
                for row in iter_submission(path)}
    except SubmissionError as e:
        raise DataError(str(e)) from None


def finished_trials(db: str) -> int:
    """How many finished trials the search's study in ``db`` keeps (0 if it was not started yet)."""
    import optuna
    if not os.path.exists(db):
        return 0
    try:
        return len(finished(optuna.load_study(study_name=STUDY_NAME, storage=f'sqlite:///{os.path.abspath(db)}')))
    except KeyError:                        # the file exists, the study not yet
        return 0


def winner_config(config: str, cfg, best: dict, calibration: str | None, parent: bool = False) -> str:
    """The chosen setting as an ensemble config file that inherits the searched one (``parent``: the parent
    ensemble's, fused with the same setting and its own members' weights)."""
    members = [dict(m.to_dict() if hasattr(m, 'to_dict') else m, weight=float(best['weights'][member_name(m)]))
               for m in cfg.members]
    fusion = dict(_delete_=True, type='SubmissionFusion', method=best['method'], fusion_iou=best['iou_thr'],
                  conf_type=best['conf_type'], fusion_mask_thr=best['mask_thr'], nms_iou=best['nms_iou'],
                  vote=best['vote'], calibration=calibration if best['calibrate'] else None,
                  member_max_per_img=cfg.test_cfg.get('max_per_img'))
    test_cfg = dict(cfg.test_cfg, score_thr=best['score_thr'], max_per_img=best['max_per_img'])
    command = best.get('pipeline')                  # set when the winner combines
    if command is not None:
        which = ('this, the parent ensemble, over the parent test shards, and best_ensemble.py over the leaf ones'
                 if parent else f'this over the leaf test shards and {PARENT_WINNER} over the parent ones')
        post = dict(expand=False, combine=command)
        step = (f'# Combined with the {"leaf" if parent else "parent"} ensemble as the search scored it: run {which} '
                f'(tools/ensemble_test.py or scripts/test_shards.sh), then:\n#   {command}\n')
    else:
        post = dict(expand=bool(best['expand']))
        step = f'# Expand the results to the parents afterwards: {bool(best["expand"])}.\n'
    return (f'# Chosen by tools/ensemble_search.py: trial {best["trial"]}, mAP {best["fold_a"]:.4f} on fold A '
            f'(chosen on), {best["fold_b"]:.4f} on fold B (held out).\n' + step +
            f'_base_ = [{os.path.abspath(config)!r}]\n'
            f'members = {members!r}\nfusion = {fusion!r}\ntest_cfg = {test_cfg!r}\n'
            f'post = {post!r}\n')


def main(argv=None) -> None:
    a = parse_args(argv)
    cfg = apply_flags(load_ensemble_config(a.config, parse_cfg_options(a.cfg_options)),
                      dict(checkpoints=a.checkpoints))
    parent_cfg = None
    if a.parent_config is not None:
        parent_cfg = load_ensemble_config(a.parent_config)
        count = len(parent_cfg.get('members') or [])
        if a.parent_checkpoints and len(a.parent_checkpoints) != count:
            raise DataError(f'{len(a.parent_checkpoints)} --parent-checkpoints for the {count} members of '
                            f'{a.parent_config}: give one each')
        parent_cfg = apply_flags(parent_cfg, dict(checkpoints=a.parent_checkpoints), a.parent_config)
        check_unique_members(a.config, cfg, a.parent_config, parent_cfg)
        parent_dir = os.path.join(a.out, 'cache', 'parent')
        parent_ann = parent_images(a.ann_file, a.parent_ann_file, os.path.join(parent_dir, 'images.pkl'))
        chain_expanders(a.hierarchy)                            # a bad hierarchy fails here too
    space = load_space(a.space)
    extra = {}
    for item in a.extra:
        name, sep, path = item.partition('=')
        if not sep:
            raise DataError(f'--extra {item!r}: expected NAME=SUBMISSION.csv')
        extra[name] = read_predictions(path)
    cached = cache_member_views(cfg, a.ann_file, a.images_dir, os.path.join(a.out, 'cache'), a.device,
                                a.progress, jobs=a.jobs)
    members = MemberSet.from_files(cached)
    if parent_cfg is not None:
        parent_cached = cache_member_views(parent_cfg, parent_ann, a.images_dir, parent_dir, a.device, a.progress,
                                           jobs=a.jobs)
        members.with_parent(MemberSet.from_files(parent_cached), a.hierarchy, parent_dir)
    with MetricSession(a.masks_csv, a.masks_dir, a.bbox_csv, a.labels_csv, a.hierarchy, a.classes,
                       dict(members.sizes), workers=a.workers, worker_data=members) as session:
        try:
            best = run_search(members, session, space, a.out, a.trials, a.seed, a.grid, a.seed, a.progress, extra)
        except (Exception, KeyboardInterrupt) as e:
            if interrupt_of(e) is None:
                raise
            db = os.path.join(a.out, 'study.db')
            raise KeyboardInterrupt(f'interrupted: finished trials are kept in {db} ({finished_trials(db)} trials '
                                    'finished); rerun the same command to resume') from None
    calibration = os.path.abspath(os.path.join(a.out, 'calibration.json')) if best['calibrate'] else None
    path = os.path.join(a.out, 'best_ensemble.py')
    with AtomicWriter(path) as f:
        f.write(winner_config(a.config, cfg, best, calibration))
    parent_path = os.path.join(a.out, PARENT_WINNER)
    if best.get('pipeline') is not None:
        with AtomicWriter(parent_path) as f:
            f.write(winner_config(a.parent_config, parent_cfg, best, calibration, parent=True))
    elif os.path.exists(parent_path):               # an earlier winner's: this one does not combine
        os.remove(parent_path)
    print(open(os.path.join(a.out, 'leaderboard.md')).read(), end='')
    print(f'best: trial {best["trial"]} fold A {best["fold_a"]:.4f} fold B {best["fold_b"]:.4f}: {path}'
          + (f' + {parent_path}' if best.get('pipeline') is not None else ''))
    print(json.dumps({k: v for k, v in best.items() if k not in ('trial', 'fold_a', 'fold_b')}, sort_keys=True))


if __name__ == '__main__':
    sys.exit(run(main))
