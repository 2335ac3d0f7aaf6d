"""Train a detector: ``python tools/train.py CONFIG [--work-dir D] [--resume [CKPT]] [--cfg-options k=v ...]``.

Multi-GPU / multi-node: ``tools/dist_train.sh`` (torchrun) or ``tools/slurm_train.sh`` (srun).
Everything but argument parsing lives in ``mmdet_ext.launch``; bad input is one line and exit status 1.
"""
import argparse
import sys

import mmdet_ext  # noqa: F401  (checkpoint fix, datasets, models)
from mmdet_ext.launch import (
    add_runner_args,
    load_config,
    prepare_train_config,
    run_mode,
    set_local_rank,
)
from util.common.cli import run


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Train a detector')
    p.add_argument('config', help='train config file path')
    p.add_argument('--resume', nargs='?', const='auto',
                   help='resume from this checkpoint, or with no value from the latest one in the work dir')
    p.add_argument('--amp', action='store_true', help='mixed-precision training (falls back to fp32 on CPU)')
    p.add_argument('--auto-scale-lr', action='store_true', help='scale the LR to the actual batch size')
    add_runner_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    set_local_rank(args.local_rank)
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    run_mode(prepare_train_config(cfg, args.resume, args.amp, args.auto_scale_lr), 'train')


if __name__ == '__main__':
    sys.exit(run(main))
