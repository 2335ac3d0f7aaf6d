"""Worker processes that end with the process that started them.

A pool's workers block reading their task queue; when the parent is killed outright (SIGKILL, the OOM
killer, a preempted node) nothing closes that queue, so they would wait forever, holding the parent's
stdout and stderr open: the job never ends. On Linux each worker asks the kernel for SIGKILL when its
parent dies (``prctl(PR_SET_PDEATHSIG)``), and quits at once if the parent is already gone.

    Pool(n, initializer=start_worker, initargs=(os.getpid(), init, init_args))
    ProcessPoolExecutor(n, initializer=start_worker, initargs=(os.getpid(),))
"""
from __future__ import annotations

import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    if sys.platform.startswith('linux'):
        try:
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:          # the parent died before the request took effect
        os._exit(1)


def start_worker(parent: int, init=None, args=()) -> None:
    """A pool initializer: die with ``parent``, leave Ctrl-C to it (a terminal sends SIGINT to the whole
    process group; the parent stops its pools, and no worker prints a traceback), then run ``init(*args)``."""
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if init is not None:
        init(*args)
