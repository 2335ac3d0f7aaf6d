"""Shared fixtures: a small synthetic dataset in the official formats, built through the real CLIs."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_LEAF = os.path.join(REPO, 'configs/tiny/cascade-mask-rcnn_r18-tiny_fpn_oid-leaf.py')


def run_cli(args, cwd=REPO, check=True, env=None, timeout=900):
    """Run ``python args...`` as a subprocess; on failure show its output in the assertion."""
    full_env = dict(os.environ, PYTHONWARNINGS='ignore', **(env or {}))
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=full_env,
                          timeout=timeout)
    if check:
        assert proc.returncode == 0, f'{args} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return proc


@pytest.fixture(scope='session')
def synthetic_data(tmp_path_factory):
    """Synthetic challenge download (seed 0) + leaf train / held-out annotation files."""
    root = tmp_path_factory.mktemp('oid')
    run_cli(['-m', 'util.data.synthetic', '--out', str(root), '--seed', '0',
             '--train', '24', '--val', '8', '--test', '6', '--no-progress'])
    run_cli(['-m', 'util.data.build',
             '--masks-csv', str(root / 'challenge-2019-train-segmentation-masks.csv'),
             '--img-root', str(root), '--subset', 'leaf', '--no-progress',
             '--out', str(root / 'annotations/leaf-train.pkl')])
    run_cli(['-m', 'util.data.build',
             '--masks-csv', str(root / 'challenge-2019-validation-segmentation-masks.csv'),
             '--img-root', str(root), '--subset', 'leaf', '--no-progress',
             '--out', str(root / 'annotations/leaf-val.pkl')])
    return root


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip cleanly on a machine without a CUDA GPU (``make test-gpu`` runs them)."""
    if not any(item.get_closest_marker('cuda') for item in items):
        return
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs a CUDA GPU (run `make test-gpu` on a GPU machine)')
    for item in items:
        if item.get_closest_marker('cuda'):
            item.add_marker(skip)
