"""Plain against federated training of the slim leaf model, same data, seed and iterations.

A federated synthetic download (``util.data.synthetic --federated``: train boxes without a mask, drawn
objects of classes nobody verified) is built into leaf annotation files with the federated fields
(``util.data.build --bbox-csv --labels-csv``); the held-out validation split keeps its exhaustive ground
truth. The slim leaf config and its ``_federated`` twin are each trained from scratch with
``tools/train.py`` and scored at the end on validation by the challenge metric (``OIDChallengeMetric``).
The plain model reads the same files: its pipeline simply does not use the federated fields.

    python tools/analysis_tools/benchmark_federated.py [--train 200 --val 50 --iters 400 --seed 0]

The last line reads ``plain_map=... federated_map=...``. On CPU, a run of the defaults takes about as long
as the demo's leaf model (two trainings); tiny sizes only check that it runs.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from util.common.cli import run  # noqa: E402
from util.common.errors import DataError  # noqa: E402

PLAIN = 'configs/tiny/cascade-mask-rcnn_r18-tiny_fpn_oid-leaf.py'
FEDERATED = 'configs/tiny/cascade-mask-rcnn_r18-tiny_fpn_oid-leaf_federated.py'
MAP_RE = re.compile(r'oid/mAP@0\.5IOU: ([0-9.]+)')


def python(*args) -> str:
    """Run a step of the pipeline as a user would; its output, or a DataError with its last error line."""
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or [f'exit status {proc.returncode}'])[-1]
        raise DataError(f'{" ".join(args[:2])} failed: {last}')
    return proc.stdout + proc.stderr


def make_data(root: str, a) -> None:
    """Federated synthetic download -> leaf-train.pkl (federated fields) and leaf-val.pkl."""
    python('-m', 'util.data.synthetic', '--out', root, '--seed', str(a.seed), '--train', str(a.train),
           '--val', str(a.val), '--test', '1', '--federated', '--difficulty', a.difficulty, '--no-progress')
    csv = os.path.join(root, 'challenge-2019-{}-segmentation-{}.csv').format
    python('-m', 'util.data.build', '--masks-csv', csv('train', 'masks'), '--bbox-csv', csv('train', 'bbox'),
           '--labels-csv', csv('train', 'labels'), '--img-root', root, '--subset', 'leaf', '--no-progress',
           '--out', os.path.join(root, 'annotations/leaf-train.pkl'))
    python('-m', 'util.data.build', '--masks-csv', csv('validation', 'masks'), '--img-root', root,
           '--subset', 'leaf', '--no-progress', '--out', os.path.join(root, 'annotations/leaf-val.pkl'))


def train_and_score(config: str, root: str, work: str, a) -> float:
    """Train ``config`` for ``a.iters`` iterations; the validation mAP logged at the end."""
    log = python('tools/train.py', config, '--work-dir', work, '--cfg-options', f'data_root={root}/',
                 'train_dataloader.dataset.index_file=None', f'train_cfg.max_iters={a.iters}',
                 f'train_cfg.val_interval={a.iters}', f'param_scheduler.1.milestones=[{a.iters * 8 // 10}]',
                 f'randomness.seed={a.seed}', f'default_hooks.checkpoint.interval={a.iters}')
    found = MAP_RE.findall(log)
    if not found:
        raise DataError(f'{config}: no validation mAP in the training log of {work}')
    return float(found[-1])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--train', type=int, default=200, help='synthetic train images')
    p.add_argument('--val', type=int, default=50, help='synthetic validation images')
    p.add_argument('--iters', type=int, default=400, help='training iterations of each model')
    p.add_argument('--seed', type=int, default=0, help='seed of the data and of both trainings')
    p.add_argument('--difficulty', default='medium', help='synthetic difficulty (util.data.synthetic)')
    p.add_argument('--workdir', default=None, help='keep data and models here (default: a temporary folder)')
    return p.parse_args(argv)


def main(argv=None) -> None:
    a = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='bench-fed-') as tmp:
        work = os.path.abspath(a.workdir or tmp)
        root = os.path.join(work, 'data')
        make_data(root, a)
        plain = train_and_score(PLAIN, root, os.path.join(work, 'plain'), a)
        print(f'plain: validation mAP {plain:.4f} after {a.iters} iterations', flush=True)
        federated = train_and_score(FEDERATED, root, os.path.join(work, 'federated'), a)
        print(f'federated: validation mAP {federated:.4f} after {a.iters} iterations', flush=True)
    print(f'plain_map={plain:.4f} federated_map={federated:.4f}')


if __name__ == '__main__':
    raise SystemExit(run(main))
