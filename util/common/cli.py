"""Shared command-line plumbing for the data-preparation steps.

Every step fails the same way on bad input: one line on stderr that names the file (and the line or
image id), exit status 1, and no output file left behind (outputs are written through AtomicWriter).
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence

from .errors import DataError


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)``; turn a DataError or OSError into a one-line message and exit status 1."""
    try:
        main(argv)
    except DataError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    except OSError as e:
        where = f'{e.filename}: ' if getattr(e, 'filename', None) else ''
        print(f'error: {where}{e.strerror or e}', file=sys.stderr)
        return 1
    return 0
