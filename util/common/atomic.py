"""Atomic file output: write to a temporary name, rename into place only when complete.

A crash or a bad input never leaves a half-written file under the final name.
"""
from __future__ import annotations

import os


class AtomicWriter:
    """Open ``path + '.tmp'`` for writing; rename to ``path`` on a clean exit, delete it on an error."""

    def __init__(self, path: str, mode: str = 'w', newline: str | None = ''):
        self.path, self.tmp = path, f'{path}.tmp'
        self.mode, self.newline = mode, newline

    def __enter__(self):
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, exist_ok=True)
        kw = {} if 'b' in self.mode else {'newline': self.newline}
        self.f = open(self.tmp, self.mode, **kw)
        return self.f

    def __exit__(self, exc_type, exc, tb):
        self.f.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            os.unlink(self.tmp)
        return False
