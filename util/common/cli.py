"""Shared command-line plumbing: every entry point fails, reports and shows progress the same way.

    run(main, argv)            one line on stderr for bad input (DataError, OSError), exit status 1;
                               Ctrl-C: one line, exit status 130
    add_progress_flag(parser)  the one switch for progress bars: ``--no-progress``
    progress(iterable, ...)    a tqdm bar on stderr; off with ``--no-progress`` or when stderr is no terminal

On bad input a step prints one line that names the file (and the line or image id), exits 1 and leaves
no output file behind (outputs are written through ``AtomicWriter``).
"""
from __future__ import annotations

import sys
from typing import Callable, Iterable, Sequence

from tqdm import tqdm

from .errors import DataError


def interrupt_of(error: BaseException | None) -> KeyboardInterrupt | None:
    """The Ctrl-C that ``error`` is, or was raised while handling: cleanup code cut short by Ctrl-C may
    fail in its turn (optuna's trial bookkeeping raises UnboundLocalError from a ``finally``,
    optuna/optuna#5280), and that is still the user's interrupt, not a bug to show as a traceback."""
    while error is not None:
        if isinstance(error, KeyboardInterrupt):
            return error
        error = error.__context__
    return None


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)``; turn a DataError or OSError into a one-line message and exit status 1, and
    Ctrl-C (``interrupt_of``; the KeyboardInterrupt's message if it has one) into one line and status
    130, as shells do."""
    try:
        main(argv)
    except (Exception, KeyboardInterrupt) as e:
        interrupt = interrupt_of(e)
        if interrupt is not None:
            print(str(interrupt) or 'interrupted', file=sys.stderr)
            return 130
        if isinstance(e, DataError):
            print(f'error: {e}', file=sys.stderr)
            return 1
        if isinstance(e, OSError):
            where = f'{e.filename}: ' if getattr(e, 'filename', None) else ''
            print(f'error: {where}{e.strerror or e}', file=sys.stderr)
            return 1
        raise
    return 0


def add_progress_flag(parser) -> None:
    parser.add_argument('--no-progress', dest='progress', action='store_false',
                        help='no progress bars (they are also off when stderr is not a terminal)')


def progress(iterable: Iterable | None = None, enabled: bool = True, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on stderr, shown only if ``enabled`` and stderr is a terminal."""
    kwargs.setdefault('file', sys.stderr)
    kwargs.setdefault('dynamic_ncols', True)
    return tqdm(iterable, disable=None if enabled else True, **kwargs)
