"""Choose an ensemble's fusion, weights and post-processing on the validation split; write the winner.

    python tools/ensemble_search.py configs/ensemble/demo-leaf.py --space configs/search/demo.py \\
        --ann-file VAL.pkl --images-dir VAL_IMAGES --out work_dirs/search --trials 40 \\
        --masks-csv ...-validation-segmentation-masks.csv --masks-dir D --bbox-csv ... --labels-csv ... \\
        [--checkpoints A B] [--cfg-options ...] [--extra NAME=SUBMISSION.csv ...] [--seed 0] [--grid]

1. Every member x view of the ensemble predicts the validation images once (OUT/cache/, resumable).
2. The ground truth is read once (``util.metric.session``); the images are split into folds A and B.
3. An Optuna study (OUT/study.db: rerun the same command to resume it, or to add trials) scores each
   setting on both folds; settings are chosen on fold A.
4. OUT/leaderboard.csv and .md (with each member-view alone, the defaults and any ``--extra``
   submission, e.g. the shared-proposal fusion, as reference rows), OUT/knobs.png, OUT/best_setting.json,
   and OUT/best_ensemble.py: the winner as an ensemble config (``SubmissionFusion``) that
   ``tools/ensemble_test.py`` runs on the test shards (expand its output when ``best_setting.json`` says
   expand, as ``util.post.pipeline`` does for the leaf model).
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
from util.metric.session import MetricSession  # noqa: E402
from util.search.members import MemberSet  # noqa: E402
from util.search.space import load_space  # noqa: E402
from util.search.study import STUDY_NAME, finished, run_search  # noqa: E402


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
    for name, what in (('masks-csv', 'validation masks CSV'), ('masks-dir', 'folder of the mask PNGs'),
                       ('bbox-csv', 'validation bbox CSV'), ('labels-csv', 'validation image labels CSV')):
        p.add_argument(f'--{name}', required=True, help=what)
    p.add_argument('--hierarchy', default=DEFAULT_HIERARCHY)
    p.add_argument('--classes', default=DEFAULT_CLASSES)
    p.add_argument('--workers', type=int, default=2, help='metric worker processes, which also fuse the trials (default 2)')
    p.add_argument('--device', default='cpu')
    add_progress_flag(p)
    return p.parse_args(argv)


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


def winner_config(args, cfg, best: dict, calibration: str | None) -> str:
    """The chosen setting as an ensemble config file that inherits the searched one."""
    members = [dict(m.to_dict() if hasattr(m, 'to_dict') else m, weight=float(best['weights'][member_name(m)]))
               for m in cfg.members]
    fusion = dict(_delete_=True, type='SubmissionFusion', method=best['method'], fusion_iou=best['iou_thr'],
                  conf_type=best['conf_type'], fusion_mask_thr=best['mask_thr'], nms_iou=best['nms_iou'],
                  vote=best['vote'], calibration=calibration if best['calibrate'] else None,
                  member_max_per_img=cfg.test_cfg.get('max_per_img'))
    test_cfg = dict(cfg.test_cfg, score_thr=best['score_thr'], max_per_img=best['max_per_img'])
    return (f'# Chosen by tools/ensemble_search.py: trial {best["trial"]}, mAP {best["fold_a"]:.4f} on fold A '
            f'(chosen on), {best["fold_b"]:.4f} on fold B (held out).\n'
            f'# Expand the results to the parents afterwards: {bool(best["expand"])}.\n'
            f'_base_ = [{os.path.abspath(args.config)!r}]\n'
            f'members = {members!r}\nfusion = {fusion!r}\ntest_cfg = {test_cfg!r}\n'
            f'post = {dict(expand=bool(best["expand"]))!r}\n')


def main(argv=None) -> None:
    a = parse_args(argv)
    cfg = apply_flags(load_ensemble_config(a.config, parse_cfg_options(a.cfg_options)),
                      dict(checkpoints=a.checkpoints))
    space = load_space(a.space)
    extra = {}
    for item in a.extra:
        name, sep, path = item.partition('=')
        if not sep:
            raise DataError(f'--extra {item!r}: expected NAME=SUBMISSION.csv')
        extra[name] = read_predictions(path)
    cached = cache_member_views(cfg, a.ann_file, a.images_dir, os.path.join(a.out, 'cache'), a.device,
                                a.progress)
    members = MemberSet.from_files(cached)
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
        f.write(winner_config(a, cfg, best, calibration))
    print(open(os.path.join(a.out, 'leaderboard.md')).read(), end='')
    print(f'best: trial {best["trial"]} fold A {best["fold_a"]:.4f} fold B {best["fold_b"]:.4f}: {path}')
    print(json.dumps({k: v for k, v in best.items() if k not in ('trial', 'fold_a', 'fold_b')}, sort_keys=True))


if __name__ == '__main__':
    sys.exit(run(main))
