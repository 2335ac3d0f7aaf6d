"""Test one shard with a test-time-augmented ensemble of detectors; write a results file.

    python tools/ensemble_test.py configs/ensemble/oid-leaf_reference.py [--cfg-options KEY=VALUE ...] \
        --images-dir DIR (--ann-file shard.pkl | --ann-file all.pkl --shard I/N) --out R.jsonl.gz \
        [--device cpu|cuda:0] [--fp16] [--workers N] [--skip-unreadable] [--no-progress]

The ensemble (members, views, fusion, test settings) is a config file (``mmdet_ext.ensemble.config``).
The flags below override it; without a file they describe a shared-proposal ensemble themselves:

    python tools/ensemble_test.py --configs C1.py C2.py --checkpoints W1.pth W2.pth [--weights 1 1] \
        --scales 1333,800 1600,960 --flip --score-thr 0 --max-per-img 120 --images-dir ... --out ...

The results file (``util.post.results_io``) appears only when the shard is complete; an interrupted run
(Ctrl-C, SIGTERM, crash, even SIGKILL) leaves ``OUT.partial`` holding every finished image and the same
command resumes it; an existing OUT is skipped. An unreadable image stops the run with one line naming
it (the ``.partial`` stays); ``--skip-unreadable`` gives it an empty prediction and lists it in
``OUT.unreadable.tsv``. The last line says what was done: ``OUT: finished: N images predicted, ...``.
One process per GPU: run shards in parallel with ``scripts/test_shards.sh``. The work is
``mmdet_ext.ensemble.runner.ensemble_test``.
"""
import argparse
import signal
import sys
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

import mmdet_ext  # noqa: E402,F401  (registers the project's modules and the checkpoint loader)
from mmdet_ext.ensemble.config import apply_flags, config_from_flags, load_ensemble_config  # noqa: E402
from mmdet_ext.ensemble.runner import ensemble_test  # noqa: E402
from mmdet_ext.launch import parse_cfg_options  # noqa: E402
from util.common.cli import add_progress_flag, run  # noqa: E402
from util.common.errors import DataError  # noqa: E402


def scale(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r}: expected LONG,SHORT such as 1333,800') from None
    return w, h


def shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split('/'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r}: expected I/N such as 0/25 (I counts from 0)') from None
    return i, n


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('config', nargs='?', help='ensemble config file (configs/ensemble/); or give --configs')
    p.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                   help="override the ensemble config, e.g. members.0.checkpoint=W.pth fusion.iou_thr=0.6")
    p.add_argument('--configs', nargs='+', help='one model config per member (replaces the file\'s)')
    p.add_argument('--checkpoints', nargs='+', help='one checkpoint (or work dir) per member, same order')
    p.add_argument('--weights', nargs='+', type=float,
                   help='per-model weights of the averages (default equal)')
    p.add_argument('--scales', nargs='+', type=scale, help='view scales LONG,SHORT (default: the first '
                   "config's test scale)")
    p.add_argument('--flip', action='store_true', help='add the mirror of every scale')
    p.add_argument('--score-thr', type=float, help="default: the first config's test_cfg.rcnn.score_thr")
    p.add_argument('--max-per-img', type=int, help="default: the first config's test_cfg.rcnn.max_per_img")
    p.add_argument('--iou-thr', type=float,
                   help="IoU threshold of the detections' per-class NMS (default: config)")
    p.add_argument('--mask-thr', type=float, help='mask probability threshold (default: config, 0.5)')
    p.add_argument('--max-proposals', type=int, help='SharedProposals: proposals kept (default 1000)')
    p.add_argument('--proposal-iou', type=float, help='SharedProposals: IoU of the proposal merge (default 0.7)')
    p.add_argument('--proposal-nms', choices=('across-views', 'all'),
                   help="'across-views': a view's own proposals are not pruned again (default); "
                        "'all': plain NMS over every view's proposals")
    p.add_argument('--images-dir', required=True, help="folder of the annotation file's img_path")
    p.add_argument('--ann-file', required=True,
                   help='test annotation file (.pkl/.json): one shard, or all images with --shard')
    p.add_argument('--shard', type=shard, help='I/N: test only the I-th (from 0) of N consecutive shards')
    p.add_argument('--out', required=True, help='results file (.jsonl, or .jsonl.gz for gzip)')
    p.add_argument('--device', default='cpu', help='cpu or cuda:0 (one GPU per process)')
    p.add_argument('--workers', type=int, default=None,
                   help='CPU processes that make the next images\' views and paste + encode the masks while '
                        'the model predicts (default: 2 on CUDA, 1 on the CPU; 0: all in this process)')
    p.add_argument('--fp16', action='store_true',
                   help='half precision (CUDA autocast) for every member; on the CPU: a warning, fp32')
    p.add_argument('--skip-unreadable', action='store_true',
                   help='give a missing, truncated or corrupt image an empty prediction, list it in '
                        'OUT.unreadable.tsv and go on (default: stop with an error, keep OUT.partial)')
    add_progress_flag(p)
    return p.parse_args(argv)


def _stop_on_sigterm(signum, frame):
    # Batch schedulers stop jobs with SIGTERM: unwind normally so the .partial file is flushed and closed.
    sys.exit(128 + signum)


def main(argv=None) -> None:
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    summary = ensemble_test(ensemble_config(a), a.ann_file, a.images_dir, a.out, shard=a.shard,
                            device=a.device, progress=a.progress, skip_unreadable=a.skip_unreadable,
                            fp16=a.fp16, workers=a.workers)
    print(summary.line())


def ensemble_config(a):
    """The ensemble config file with --cfg-options and the flags applied, or the flags alone."""
    flags = {k: getattr(a, k) for k in ('configs', 'checkpoints', 'weights', 'scales', 'flip', 'score_thr',
                                        'max_per_img', 'iou_thr', 'mask_thr', 'max_proposals',
                                        'proposal_iou', 'proposal_nms')}
    if a.config is None:
        if a.cfg_options:
            raise DataError('--cfg-options needs an ensemble config file')
        return config_from_flags(flags)
    return apply_flags(load_ensemble_config(a.config, parse_cfg_options(a.cfg_options)), flags)


if __name__ == '__main__':
    sys.exit(run(main))
