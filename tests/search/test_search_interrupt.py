"""Ctrl-C in the middle of tools/ensemble_search.py, as a terminal sends it (SIGINT to the foreground
process group, the metric workers included): the search ends at once with status 130 and one line, no
process is left, and the same command run again resumes without repeating a finished trial.

The member-view cache is filled beforehand with submission CSVs, as the CLI finds it after a finished
caching step (it then only loads the members, it does not run them): the test is about the trials.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
from _ensemble_helpers import TINY, save_checkpoint, subprocess_env, tiny_detector
from _eval_files import write_dataset
from conftest import REPO, run_cli

from util.common.cli import run
from util.common.errors import DataError
from util.common.hierarchy import load_default
from util.common.mask_codec import encode_mask
from util.data.annotations import make_metainfo, save_annotations
from util.search.study import STUDY_NAME

TRIALS = 12         # what the command asks for: Ctrl-C comes after 2, seconds before the end
VIEW = '160x128'


@pytest.fixture(scope='module')
def search(tmp_path_factory):
    """The search's command-line arguments (without ``--trials``) and its output folder."""
    root = tmp_path_factory.mktemp('interrupt')
    ds = write_dataset(str(root / 'gt'), n_images=40, seed=11)
    out = root / 'search'
    os.makedirs(out / 'cache')
    rng = np.random.default_rng(0)
    for k, name in enumerate(['a', 'b']):       # each member's own predictions: thinned, rescored, shifted
        rows = {image_id: [(label, float(np.clip(score * (0.7 + 0.2 * k) + rng.normal(0, 0.1), 0.01, 1)),
                            encode_mask(np.roll(mask, k, axis=1)))
                           for label, score, mask in dets if rng.random() < 0.85]
                for image_id, dets in ds.predictions.items()}
        ds.write_submission(str(out / 'cache' / f'{name}@{VIEW}.csv'), rows)
    ann = str(root / 'val.pkl')
    save_annotations(ann, make_metainfo(load_default(), 'leaf'),
                     [dict(img_id=i, img_path=f'{i}.jpg', height=h, width=w, instances=[])
                      for i, (h, w) in ds.sizes.items()])
    ckpt = save_checkpoint(tiny_detector(0, num_classes=None), str(root / 'tiny.pth'))   # loaded, not run
    ens = root / 'ens.py'
    ens.write_text(f"members = [dict(name='a', config={TINY!r}, checkpoint={ckpt!r}),\n"
                   f"           dict(name='b', config={TINY!r}, checkpoint={ckpt!r})]\n"
                   "views = dict(scales=[(160, 128)], flip=False)\n"
                   "fusion = dict(type='SharedProposals')\ntest_cfg = dict(score_thr=0.0, max_per_img=20)\n")
    space = root / 'space.py'
    space.write_text("space = dict(method=['wbf', 'vote', 'nms'], iou_thr=(0.4, 0.7), weights=(0.5, 2.0),\n"
                     "             score_thr=[0.0, 0.05], max_per_img=[10, 20])\n")
    g = ds.args()
    args = [str(ens), '--space', str(space), '--ann-file', ann, '--images-dir', str(root), '--out', str(out),
            '--workers', '2', '--no-progress', *g[:8]]
    return args, out


def trials(db):
    """The study's trials, through optuna: only once the search has ended (optuna's first connection to a
    file migrates its schema, which races with the search's own creation of it)."""
    return optuna.load_study(study_name=STUDY_NAME, storage=f'sqlite:///{db}').get_trials(deepcopy=False)


def complete(db):
    return [t for t in trials(db) if t.state == optuna.trial.TrialState.COMPLETE]


def complete_while_running(db):
    """How many trials have finished, read as a second process sees the file while the search writes it:
    read-only SQL, so the reader never creates or migrates anything (0 while the tables are not there yet
    or the writer holds the lock)."""
    if not db.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f'file:{db}?mode=ro', uri=True, timeout=0.1)) as con:
            return con.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:        # no such table yet, or locked: ask again
        return 0


@pytest.mark.slow
def test_ctrl_c_mid_search_then_the_same_command_resumes(search):
    args, out = search
    db = out / 'study.db'
    command = [sys.executable, 'tools/ensemble_search.py', *args, '--trials', str(TRIALS)]
    proc = subprocess.Popen(command, cwd=REPO, env=dict(subprocess_env(), PYTHONWARNINGS='ignore'),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while complete_while_running(db) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)        # the group: the CLI and its metric workers, as a terminal does
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert 'Traceback' not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    done = len(complete(db))
    assert 2 <= done < TRIALS
    assert lines[0] == (f'interrupted: finished trials are kept in {db} ({done} trials finished); '
                        'rerun the same command to resume')
    deadline = time.monotonic() + 5
    while True:                                   # no metric worker outlived the search
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, 'a process of the interrupted search is still alive'
        time.sleep(0.1)
    before = {t.number: (t.value, t.params) for t in complete(db)}
    # What optuna keeps of the trial Ctrl-C cut short: FAIL (caught in the objective) or RUNNING (cut in
    # optuna's own bookkeeping), never COMPLETE, and never counted as finished.
    cut = [t.state for t in trials(db) if t.state != optuna.trial.TrialState.COMPLETE]
    assert len(cut) <= 1 and set(cut) <= {optuna.trial.TrialState.FAIL, optuna.trial.TrialState.RUNNING}

    again = run_cli(command[1:], env=subprocess_env())
    assert f'{TRIALS - done} trials run now, {done} finished before (resumed)' in again.stdout
    stored = trials(db)
    assert [t.number for t in stored] == list(range(len(stored))) == sorted({t.number for t in stored})
    finished = {t.number: (t.value, t.params) for t in complete(db)}
    assert len(finished) == TRIALS and len(stored) == TRIALS + len(cut)
    assert {n: finished[n] for n in before} == before          # the finished ones kept, not run again
    board = (out / 'leaderboard.csv').read_text()
    assert sorted(int(n) for n in re.findall(r'^trial (\d+),', board, re.M)) == sorted(finished)


def cut_short_bookkeeping(argv):
    """What optuna's trial bookkeeping does when Ctrl-C lands in it: its ``finally`` reads a name the
    interrupted line never set (optuna/optuna#5280)."""
    try:
        raise KeyboardInterrupt
    finally:
        state = locals()['state']       # noqa: F841  (KeyError: never assigned)


def fails(error):
    def main(argv):
        raise error
    return main


def test_the_runner_reports_an_interrupt_even_when_cleanup_then_fails(capsys):
    assert run(cut_short_bookkeeping) == 130
    assert capsys.readouterr().err == 'interrupted\n'
    assert run(fails(KeyboardInterrupt('interrupted: rerun it'))) == 130
    assert capsys.readouterr().err == 'interrupted: rerun it\n'
    assert run(fails(DataError('x.csv:3: bad score'))) == 1          # bad input: still one line and 1
    assert capsys.readouterr().err == 'error: x.csv:3: bad score\n'
    with pytest.raises(ZeroDivisionError):                            # a bug, without Ctrl-C: a traceback
        run(fails(ZeroDivisionError('bug')))
