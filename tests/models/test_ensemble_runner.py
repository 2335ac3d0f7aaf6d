"""Sharded ensemble test runs: every image once, resumable to the same bytes, clear errors; the CLI and
scripts/test_shards.sh end to end on CPU."""
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
from _ensemble_helpers import (
    FEW_CLASSES,
    TINY,
    damage,
    leaf_metainfo,
    one_thread,
    save_checkpoint,
    shared,
    subprocess_env,
    tiny_detector,
    write_images,
)
from conftest import REPO

from mmdet_ext.ensemble.config import config_from_flags
from mmdet_ext.ensemble.runner import ensemble_test, run_shard, select_shard
from util.common.errors import DataError
from util.data.annotations import save_annotations
from util.post.results_io import iter_results

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
    ensemble = shared([tiny_detector(0)], [SMALL])
    whole, cut = str(tmp_path / 'whole.jsonl.gz'), str(tmp_path / 'cut.jsonl.gz')
    assert run_shard(ensemble, items, folder, whole, classes, progress=False).status == 'finished'

    with pytest.raises(Interrupted):
        run_shard(CountingEnsemble(ensemble, stop_after=2), items, folder, cut, classes, progress=False)
    assert not os.path.exists(cut) and os.path.exists(cut + '.partial')
    rest = CountingEnsemble(ensemble)
    summary = run_shard(rest, items, folder, cut, classes, progress=False)
    assert (summary.status, summary.predicted, summary.already_done) == ('resumed', len(items) - 2, 2)
    assert rest.calls == len(items) - 2
    with open(whole, 'rb') as a, open(cut, 'rb') as b:
        assert a.read() == b.read()
    assert run_shard(rest, items, folder, cut, classes, progress=False).status == 'skipped'
    assert rest.calls == len(items) - 2            # a finished shard is not recomputed

    records = list(iter_results(whole))
    assert [r.image_id for r in records] == [it['img_id'] for it in items]
    for r, it in zip(records, items):
        assert 0 < len(r.labels) <= 10
        assert all(m['size'] == [it['height'], it['width']] for m in r.rles)


@pytest.mark.parametrize('kind', ['shared', 'wbf'])
def test_pipelined_run_writes_the_serial_bytes(tmp_path, shard, kind):
    """Views made in DataLoader workers, masks pasted and encoded in a pool: the same file, byte for byte,
    for the shared-proposal and the late fusion; an unreadable image among them still stops in order."""
    from mmdet_ext.ensemble import FUSIONS, Member, view_specs
    folder, items = shard
    classes = leaf_metainfo()['mids'][:FEW_CLASSES]
    if kind == 'shared':
        ensemble = shared([tiny_detector(0), tiny_detector(1)], [SMALL, (192, 160)], flip=True)
    else:
        ensemble = FUSIONS.build(dict(type='WBF'), default_args=dict(
            members=[Member(tiny_detector(0)), Member(tiny_detector(1), 2.0)], views=view_specs([SMALL], True)))
    serial, piped = str(tmp_path / 'serial.jsonl.gz'), str(tmp_path / 'piped.jsonl.gz')
    run_shard(ensemble, items, folder, serial, classes, progress=False, workers=0)
    summary = run_shard(ensemble, items, folder, piped, classes, progress=False, workers=2)
    assert summary.predicted == len(items)
    with open(serial, 'rb') as a, open(piped, 'rb') as b:
        assert a.read() == b.read()
    broken = tmp_path / 'broken'
    shutil.copytree(folder, broken)
    damage(str(broken / items[2]['img_path']), 'truncated')
    out = str(tmp_path / 'broken.jsonl.gz')
    with pytest.raises(DataError, match=re.escape(str(broken / items[2]['img_path']))):
        run_shard(ensemble, items, str(broken), out, classes, progress=False, workers=2)
    assert records_in(out + '.partial') == 2


def test_missing_image_stops_before_writing_or_is_skipped(tmp_path, shard):
    folder, items = shard
    few = tmp_path / 'few'
    few.mkdir()
    for item in items[:1] + items[2:]:
        shutil.copy(os.path.join(folder, item['img_path']), few)
    classes = leaf_metainfo()['mids'][:FEW_CLASSES]
    ensemble = CountingEnsemble(shared([tiny_detector(0)], [SMALL]))
    out = str(tmp_path / 'r.jsonl')
    missing = str(few / items[1]['img_path'])
    with pytest.raises(DataError, match=re.escape(f'{missing}: image not found; or pass --skip-unreadable')):
        run_shard(ensemble, items, str(few), out, classes, progress=False)
    assert ensemble.calls == 0 and sorted(os.listdir(tmp_path)) == ['few']

    summary = run_shard(ensemble, items, str(few), out, classes, progress=False, skip_unreadable=True)
    assert (summary.predicted, summary.unreadable) == (3, [(items[1]['img_id'], missing, 'image not found')])
    assert summary.line() == (f'{out}: finished: 3 images predicted, 0 already done, 1 unreadable given '
                              f'empty predictions (listed in {out}.unreadable.tsv)')
    with open(out + '.unreadable.tsv') as f:
        assert f.read() == f'image_id\tpath\treason\n{items[1]["img_id"]}\t{missing}\timage not found\n'
    records = list(iter_results(out))
    assert [r.image_id for r in records] == [it['img_id'] for it in items]
    assert records[1][1:] == (items[1]['width'], items[1]['height'], [], [], [])
    assert all(r.labels for i, r in enumerate(records) if i != 1)
    assert sorted(os.listdir(tmp_path)) == ['few', 'r.jsonl', 'r.jsonl.unreadable.tsv']


def flags_config(configs, checkpoints, **flags):
    return config_from_flags(dict(configs=configs, checkpoints=checkpoints, **flags))


def test_bad_inputs_fail_before_any_model_is_built(tmp_path, shard):
    folder, items = shard
    ann = str(tmp_path / 'all.json')
    save_annotations(ann, leaf_metainfo(), items)
    ckpt = str(tmp_path / 'missing.pth')
    with pytest.raises(DataError, match=r'missing.pth: checkpoint not found \(members\[0\] of the command line'):
        flags_config([TINY], [ckpt])
    with pytest.raises(DataError, match=r'nope.py: config not found \(members\[0\]'):
        flags_config(['nope.py'], [ckpt])
    with pytest.raises(DataError, match='1 --checkpoints for the 2 members of the command line: give one each'):
        flags_config([TINY, TINY], [ckpt])
    cfg = flags_config([TINY], [ann])           # any existing file passes the first check
    with pytest.raises(DataError, match=f'{items[0]["img_path"]}: image not found .and 3 more.; or pass '
                                        '--skip-unreadable'):
        ensemble_test(cfg, ann, str(tmp_path), str(tmp_path / 'r.jsonl'))
    assert sorted(os.listdir(tmp_path)) == ['all.json']


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


@pytest.fixture(scope='module')
def reference(cli_setup):
    """The uninterrupted run of the CLI's model arguments, in this process (same code, one start-up less)."""
    d, folder, ann, ckpts, items = cli_setup
    whole = str(d / 'whole.jsonl.gz')
    ensemble_test(flags_config([TINY, TINY], ckpts, scales=[SMALL], score_thr=0, max_per_img=3), ann, folder,
                  whole, progress=False)
    return whole


def cli(*args):
    return [sys.executable, os.path.join(REPO, 'tools', 'ensemble_test.py'), *args]


def run_tool(*args):
    return subprocess.run(cli(*args), cwd=REPO, env=subprocess_env(PYTHONWARNINGS='ignore'),
                          capture_output=True, text=True, timeout=600)


def model_args(ckpts):
    return ['--configs', TINY, TINY, '--checkpoints', *ckpts, '--scales', '160,128',
            '--score-thr', '0', '--max-per-img', '3']


def one_error_line(proc) -> str:
    """The run failed with exit status 1 and exactly one line on stderr, no traceback: that line."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


def records_in(path) -> int:
    with open(path, 'rb') as f:
        return sum(1 for line in f if line.endswith(b'\n')) - 1      # complete lines after the header


@pytest.mark.parametrize('kind', ['truncated', 'text'])
def test_cli_unreadable_checkpoint_is_one_line(cli_setup, kind):
    d, folder, ann, ckpts, items = cli_setup
    bad = d / f'{kind}.pth'
    data = open(ckpts[0], 'rb').read()
    bad.write_bytes(data[:len(data) // 2] if kind == 'truncated' else b'weights: none, this is a text file\n')
    out = d / f'{kind}.jsonl.gz'
    proc = run_tool('--configs', TINY, '--checkpoints', str(bad), '--images-dir', folder, '--ann-file', ann,
                    '--out', str(out), '--scales', '160,128', '--no-progress')
    reason = {'truncated': 'RuntimeError: PytorchStreamReader failed reading zip archive',
              'text': 'UnpicklingError'}[kind]
    assert one_error_line(proc).startswith(f'error: {bad}: not a readable checkpoint ({reason}')
    assert not out.exists() and not os.path.exists(f'{out}.partial')


def test_cli_missing_image_and_config_are_one_line(cli_setup, tmp_path):
    d, folder, ann, ckpts, items = cli_setup
    os.makedirs(tmp_path / 'few')
    for item in items[1:]:
        shutil.copy(os.path.join(folder, item['img_path']), tmp_path / 'few')
    proc = run_tool(*model_args(ckpts), '--images-dir', str(tmp_path / 'few'), '--ann-file', ann,
                    '--out', str(tmp_path / 'r.jsonl'))
    assert one_error_line(proc) == (f'error: {tmp_path / "few" / items[0]["img_path"]}: image not found; '
                                    'or pass --skip-unreadable to give missing images empty predictions')
    proc = run_tool('--configs', 'nope.py', '--checkpoints', ckpts[0], '--images-dir', folder,
                    '--ann-file', ann, '--out', str(tmp_path / 'r.jsonl'))
    assert one_error_line(proc) == 'error: nope.py: config not found (members[0] of the command line)'
    assert os.listdir(tmp_path) == ['few']


@pytest.mark.slow
@pytest.mark.parametrize('kind,then', [('truncated', 'fix'), ('truncated', 'skip'), ('garbage header', 'skip'),
                                       ('garbage data', 'skip')])
def test_cli_unreadable_image_stops_then_resumes_or_skips(cli_setup, reference, tmp_path, kind, then):
    """Default: stop at the damaged third image, one line naming it, the first two images kept in the
    .partial. Then either the image is fixed and the rerun resumes to the bytes of a clean run, or the
    rerun passes --skip-unreadable: only the fourth image is predicted, the third gets an empty
    prediction and is listed beside the results and in the summary; the others equal a clean run."""
    d, folder, ann, ckpts, items = cli_setup
    images = tmp_path / 'images'
    shutil.copytree(folder, images)
    bad = str(images / items[2]['img_path'])
    damage(bad, kind)
    out = str(tmp_path / 'r.jsonl.gz')
    common = model_args(ckpts) + ['--images-dir', str(images), '--ann-file', ann, '--out', out]
    proc = run_tool(*common, '--no-progress')
    line = one_error_line(proc)
    assert re.match(re.escape(f'error: {bad}: ') + r'(not a readable image|image does not decode) \(', line)
    assert line.endswith(f'the finished images are kept in {out}.partial: fix or replace the file and rerun '
                         'to resume, or pass --skip-unreadable')
    assert not os.path.exists(out) and records_in(out + '.partial') == 2

    if then == 'fix':
        shutil.copy(os.path.join(folder, items[2]['img_path']), bad)
        proc = run_tool(*common)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.strip().splitlines()[-1] == f'{out}: resumed: 2 images predicted, 2 already done'
        with open(reference, 'rb') as a, open(out, 'rb') as b:
            assert a.read() == b.read()
        assert sorted(os.listdir(tmp_path)) == ['images', 'r.jsonl.gz']
        return
    proc = run_tool(*common, '--skip-unreadable')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.splitlines() == [f'r.jsonl.gz: {k}/4 images written' for k in (3, 4)]
    assert proc.stdout.strip().splitlines()[-1] == (
        f'{out}: resumed: 1 images predicted, 2 already done, 1 unreadable given empty predictions '
        f'(listed in {out}.unreadable.tsv)')
    with open(out + '.unreadable.tsv') as f:
        rows = [line.rstrip('\n').split('\t') for line in f]
    assert rows[0] == ['image_id', 'path', 'reason'] and len(rows) == 2
    assert rows[1][:2] == [items[2]['img_id'], bad]
    assert re.match(r'(not a readable image|image does not decode) \(', rows[1][2])
    got = {r.image_id: r for r in iter_results(out)}
    assert list(got) == [it['img_id'] for it in items]
    assert got[items[2]['img_id']][3:] == ([], [], [])
    assert (got[items[2]['img_id']].width, got[items[2]['img_id']].height) == (items[2]['width'],
                                                                               items[2]['height'])
    for r in iter_results(reference):
        if r.image_id != items[2]['img_id']:
            assert got[r.image_id] == r


@pytest.mark.slow
@pytest.mark.parametrize('sig', [signal.SIGKILL, signal.SIGTERM], ids=['SIGKILL', 'SIGTERM'])
def test_cli_killed_run_keeps_its_images_and_resumes_to_the_same_bytes(cli_setup, reference, tmp_path, sig):
    """Kill the tester once the log says two images are written: the .partial holds them (or one more,
    in flight); the rerun predicts only the rest and ends with the bytes of an uninterrupted run."""
    d, folder, ann, ckpts, items = cli_setup
    common = model_args(ckpts) + ['--images-dir', folder, '--ann-file', ann]
    cut = str(tmp_path / 'cut.jsonl.gz')
    proc = subprocess.Popen(cli(*common, '--out', cut), cwd=REPO, env=subprocess_env(PYTHONWARNINGS='ignore'),
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    seen = b''
    while b'cut.jsonl.gz: 2/4 images written' not in seen:
        chunk = proc.stderr.read1(256)
        assert chunk, seen.decode(errors='replace')[-2000:]
        seen += chunk
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    assert proc.returncode == (-sig if sig == signal.SIGKILL else 128 + sig)
    assert not os.path.exists(cut)
    kept = records_in(cut + '.partial')
    assert kept in (2, 3)

    again = run_tool(*common, '--out', cut)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.strip().splitlines()[-1] == (f'{cut}: resumed: {4 - kept} images predicted, '
                                                     f'{kept} already done')
    assert again.stderr.count('images written') == 4 - kept     # one log line per image predicted
    with open(reference, 'rb') as a, open(cut, 'rb') as b:
        assert a.read() == b.read()
    assert sorted(os.listdir(tmp_path)) == ['cut.jsonl.gz']


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


def test_cli_ensemble_file_gives_the_bytes_of_the_flags(cli_setup, reference, tmp_path):
    """The recipe of ``reference`` (flags) written as an ensemble config file, with a ``_base_`` and a
    ``--cfg-options`` override: the same results file, byte for byte."""
    d, folder, ann, ckpts, items = cli_setup
    (tmp_path / 'base.py').write_text(
        "views = dict(scales=[(160, 128)], flip=False)\n"
        "fusion = dict(type='SharedProposals', max_proposals=1000, proposal_iou=0.7)\n"
        "test_cfg = dict(score_thr=0.0, max_per_img=7)\n")
    (tmp_path / 'ensemble.py').write_text(
        "_base_ = ['./base.py']\n"
        f"members = [dict(config={TINY!r}, checkpoint={ckpts[0]!r}), dict(config={TINY!r}, checkpoint='x')]\n")
    out = str(tmp_path / 'r.jsonl.gz')
    proc = run_tool(str(tmp_path / 'ensemble.py'), '--cfg-options', f'members.1.checkpoint={ckpts[1]}',
                    'test_cfg.max_per_img=3', '--images-dir', folder, '--ann-file', ann, '--out', out,
                    '--no-progress')
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(reference, 'rb') as a, open(out, 'rb') as b:
        assert a.read() == b.read()


def test_cli_fp16_on_the_cpu_warns_and_gives_the_fp32_bytes(cli_setup, reference, tmp_path):
    d, folder, ann, ckpts, items = cli_setup
    out = str(tmp_path / 'r.jsonl.gz')
    proc = run_tool(*model_args(ckpts), '--fp16', '--images-dir', folder, '--ann-file', ann, '--out', out,
                    '--no-progress')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'warning: --fp16 needs a CUDA device; cpu predicts in fp32' in proc.stderr
    with open(reference, 'rb') as a, open(out, 'rb') as b:
        assert a.read() == b.read()
