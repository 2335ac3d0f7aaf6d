"""Evaluate a checkpoint: ``python tools/test.py CONFIG CHECKPOINT [--out preds.pkl] [--cfg-options ...]``.

For the challenge's test-time-augmentation ensemble and sharded test runs use ``tools/ensemble_test.py``.
Everything but argument parsing lives in ``mmdet_ext.launch``; bad input is one line and exit status 1.
"""
import argparse
import sys

import mmdet_ext  # noqa: F401
from mmdet_ext.launch import (
    add_runner_args,
    load_config,
    prepare_test_config,
    run_mode,
    set_local_rank,
)
from util.common.cli import run


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Test (and evaluate) a detector')
    p.add_argument('config', help='test config file path')
    p.add_argument('checkpoint', help='checkpoint file (or a work dir: its last checkpoint)')
    p.add_argument('--out', help='dump the raw predictions to this .pkl file')
    p.add_argument('--show-dir', help='draw predictions into this folder (under the work dir)')
    add_runner_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    set_local_rank(args.local_rank)
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    run_mode(prepare_test_config(cfg, args.checkpoint, args.out, args.show_dir), 'test')


if __name__ == '__main__':
    sys.exit(run(main))
