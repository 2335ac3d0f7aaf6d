"""Sharded ensemble test runs: every image once, resumable to the same bytes, clear errors; the CLI and
scripts/test_shards.sh end to end on CPU."""
import os
import shutil
import signal
import subprocess
import sys

import pytest

from _ensemble_helpers import (FEW_CLASSES, TINY, leaf_metainfo, one_thread, save_checkpoint, subprocess_env,
                               tiny_detector, write_images)
from mmdet_ext.ensemble import EnsembleTTA
from mmdet_ext.ensemble.runner import ensemble_test, run_shard, select_shard
from util.data.annotations import save_annotations
from util.common.errors import DataError
from util.post.results_io import iter_results
from conftest import REPO

SMALL = (160, 128)


class Interrupted(Exception):
    pass


class CountingEnsemble:
    """The ensemble, counting its predictions; raises after ``stop_after`` of them (a killed run)."""

    def __init__(self, ensemble, stop_after=None):
        self.ensemble, self.stop_after, self.calls = ensemble, stop_after, 0
        self.num_classes = ensemble.num_classes

    def predict(self, path, img_id=0):
        if self.calls == self.stop_after:
            raise Interrupted
        self.calls += 1
        return self.ensemble.predict(path, img_id)


@pytest.fixture(scope='module', autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope='module')
def shard(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp('images'))
    return folder, write_images(folder, 4)


def test_shards_cover_every_image_once():
    items = list(range(103))
    for n in (1, 2, 7, 25, 103):
        parts = [select_shard(items, i, n) for i in range(n)]
        assert [x for p in parts for x in p] == items
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(DataError, match='0..2'):
        select_shard(items, 3, 3)


def test_interrupted_run_resumes_to_the_same_bytes(tmp_path, shard):
    folder, items = shard
    classes = leaf_metainfo()['mids'][:FEW_CLASSES]
    ensemble = EnsembleTTA([tiny_detector(0)], [SMALL])
    whole, cut = str(tmp_path / 'whole.jsonl.gz'), str(tmp_path / 'cut.jsonl.gz')
    assert run_shard(ensemble, items, folder, whole, classes, progress=False) == 'finished'

    with pytest.raises(Interrupted):
        run_shard(CountingEnsemble(ensemble, stop_after=2), items, folder, cut, classes, progress=False)
    assert not os.path.exists(cut) and os.path.exists(cut + '.partial')
    rest = CountingEnsemble(ensemble)
    assert run_shard(rest, items, folder, cut, classes, progress=False) == 'resumed'
    assert rest.calls == len(items) - 2
    with open(whole, 'rb') as a, open(cut, 'rb') as b:
        assert a.read() == b.read()
    assert run_shard(rest, items, folder, cut, classes, progress=False) == 'skipped'
    assert rest.calls == len(items) - 2            # a finished shard is not recomputed

    records = list(iter_results(whole))
    assert [r.image_id for r in records] == [it['img_id'] for it in items]
    for r, it in zip(records, items):
        assert 0 < len(r.labels) <= 10
        assert all(m['size'] == [it['height'], it['width']] for m in r.rles)


def test_bad_inputs_fail_before_any_model_is_built(tmp_path, shard):
    folder, items = shard
    ann = str(tmp_path / 'all.json')
    save_annotations(ann, leaf_metainfo(), items)
    ckpt = str(tmp_path / 'missing.pth')
    with pytest.raises(DataError, match='missing.pth: checkpoint not found'):
        ensemble_test([TINY], [ckpt], ann, folder, str(tmp_path / 'r.jsonl'))
    with pytest.raises(DataError, match='nope.py: config not found'):
        ensemble_test(['nope.py'], [ckpt], ann, folder, str(tmp_path / 'r.jsonl'))
    with pytest.raises(DataError, match=f'{items[0]["img_path"]}: image not found'):
        ensemble_test([TINY], [ckpt], ann, str(tmp_path), str(tmp_path / 'r.jsonl'))
    with pytest.raises(DataError, match='one checkpoint per config'):
        ensemble_test([TINY, TINY], [ckpt], ann, folder, str(tmp_path / 'r.jsonl'))


# ---- end to end, as subprocesses -------------------------------------------------------------------

@pytest.fixture(scope='module')
def cli_setup(tmp_path_factory, shard):
    """Two 275-class slim checkpoints and an annotation file of the module's four JPEGs."""
    d = tmp_path_factory.mktemp('cli')
    folder, items = shard
    ann = str(d / 'all.pkl')
    save_annotations(ann, leaf_metainfo(), items)
    ckpts = [save_checkpoint(tiny_detector(seed, num_classes=None), str(d / f'w{seed}.pth'))
             for seed in (0, 1)]
    return d, folder, ann, ckpts, items


def cli(*args):
    return [sys.executable, os.path.join(REPO, 'tools', 'ensemble_test.py'), *args]


def model_args(ckpts):
    return ['--configs', TINY, TINY, '--checkpoints', *ckpts, '--scales', '160,128',
            '--score-thr', '0', '--max-per-img', '3']


@pytest.mark.slow
def test_cli_sigterm_then_rerun_gives_the_same_bytes(cli_setup):
    d, folder, ann, ckpts, items = cli_setup
    common = model_args(ckpts) + ['--images-dir', folder, '--ann-file', ann]
    whole, cut = str(d / 'whole.jsonl'), str(d / 'cut.jsonl')
    # The uninterrupted reference, in this process (same code as the CLI below, one start-up less).
    assert ensemble_test([TINY, TINY], ckpts, ann, folder, whole, scales=[SMALL], score_thr=0,
                         max_per_img=3, progress=False) == 'finished'

    proc = subprocess.Popen(cli(*common, '--out', cut), cwd=REPO, env=subprocess_env(),
                            stderr=subprocess.PIPE)
    seen = b''
    while b' 1/4 ' not in seen:                 # tqdm reports the first of four images written
        chunk = proc.stderr.read1(256)
        assert chunk, seen.decode(errors='replace')[-2000:]
        seen += chunk
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert not os.path.exists(cut) and os.path.exists(cut + '.partial')

    again = subprocess.run(cli(*common, '--out', cut), cwd=REPO, env=subprocess_env(), capture_output=True,
                           text=True)
    assert again.returncode == 0, again.stderr
    with open(whole, 'rb') as a, open(cut, 'rb') as b:
        assert a.read() == b.read()
    missing = subprocess.run(cli('--configs', TINY, '--checkpoints', str(d / 'gone.pth'),
                                 '--images-dir', folder, '--ann-file', ann, '--out', str(d / 'x.jsonl')),
                             cwd=REPO, env=subprocess_env(), capture_output=True, text=True)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1] == f'error: {d / "gone.pth"}: checkpoint not found'


@pytest.mark.slow
def test_test_shards_script_on_cpu(cli_setup):
    d, folder, ann, ckpts, items = cli_setup
    out = str(d / 'shards')
    cmd = ['bash', os.path.join(REPO, 'scripts', 'test_shards.sh'), '--out-dir', out, '--images-dir', folder,
           '--ann-file', ann, '--num-shards', '3', '--workers', '2', '--python', sys.executable, '--',
           '--configs', TINY, '--checkpoints', ckpts[0], '--scales', '160,128', '--max-per-img', '3']
    env = subprocess_env(GPUS='0')
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.strip().splitlines()[-1] == 'ran: 0 1 2; skipped: -; failed: -'
    names = [f'shard_{i:02d}_of_03.jsonl.gz' for i in range(3)]
    ids = [r.image_id for name in names for r in iter_results(os.path.join(out, name))]
    assert ids == [it['img_id'] for it in items]                 # every image once, in order

    os.remove(os.path.join(out, names[1]))                        # as if shard 1 never finished
    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.strip().splitlines()[-1] == 'ran: 1; skipped: 0 2; failed: -'


@pytest.mark.slow
def test_slurm_array_task_runs_its_own_shard(cli_setup, tmp_path):
    """scripts/slurm_test_shards.sh as Slurm starts an array task: a copy of the script in a spool folder,
    SLURM_ARRAY_TASK_ID and SLURM_SUBMIT_DIR in the environment, the submit folder as working folder."""
    d, folder, ann, ckpts, items = cli_setup
    spool = tmp_path / 'spool'
    spool.mkdir()
    script = shutil.copy(os.path.join(REPO, 'scripts', 'slurm_test_shards.sh'), spool / 'slurm_script')
    out = tmp_path / 'out'
    args = ['bash', str(script), '--out-dir', str(out), '--images-dir', folder, '--ann-file', ann,
            '--num-shards', '3', '--python', sys.executable, '--',
            '--configs', TINY, '--checkpoints', ckpts[0], '--scales', '160,128', '--max-per-img', '3']
    env = subprocess_env(GPUS='0', SLURM_ARRAY_TASK_ID='2', SLURM_SUBMIT_DIR=REPO)
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == 'ran: 2; skipped: -; failed: -'
    assert sorted(os.listdir(out)) == ['logs', 'shard_02_of_03.jsonl.gz']
    ids = [r.image_id for r in iter_results(str(out / 'shard_02_of_03.jsonl.gz'))]
    assert ids == [it['img_id'] for it in select_shard(items, 2, 3)]

    env.pop('SLURM_ARRAY_TASK_ID')
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith('slurm_test_shards.sh: SLURM_ARRAY_TASK_ID is not set')
