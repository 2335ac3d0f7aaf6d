"""Pool workers die with their parent: a SIGKILLed command leaves no process behind holding its pipes."""
import os
import subprocess
import sys
import time

import pytest
from conftest import REPO

PARENT = '''
import multiprocessing as mp, os, signal, sys, time
from concurrent.futures import ProcessPoolExecutor
from util.common.workers import start_worker

def pid(_=None):
    time.sleep(0.2)
    return os.getpid()

if __name__ == '__main__':
    if sys.argv[1] == 'pool':
        pool = mp.get_context('fork').Pool(2, start_worker, (os.getpid(),))
        pids = set(pool.map(pid, range(8)))
    else:
        pool = ProcessPoolExecutor(2, mp_context=mp.get_context('fork'), initializer=start_worker,
                                   initargs=(os.getpid(),))
        pids = set(pool.map(pid, range(8)))
    print(' '.join(map(str, sorted(pids))), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
'''


def alive(pid: int) -> bool:
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().split(')')[-1].split()[0] != 'Z'
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='PR_SET_PDEATHSIG is Linux only')
@pytest.mark.parametrize('kind', ['pool', 'executor'])
def test_workers_end_when_their_parent_is_killed(kind):
    proc = subprocess.run([sys.executable, '-c', PARENT, kind], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == -9, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert pids
    deadline = time.time() + 10
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids)
