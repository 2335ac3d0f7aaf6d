"""Checkpoint loading under torch >= 2.6, and a clear error for a file that is no checkpoint.

torch now loads with ``weights_only=True`` by default, and mmengine 0.10.7's runner checkpoints (they hold
``message_hub``, numpy scalars and the config) are refused: ``resume`` and ``load_from`` fail. We re-register
mmengine's local and http(s) schemes with loaders that pass ``weights_only=False``. Only load checkpoints you
trust: unpickling can run code.

A truncated download (torch: RuntimeError), a text file (UnpicklingError) or an empty one (EOFError) is a
``DataError`` naming the file, so every entry point (train, test, ensemble test) reports it in one line.
"""
from __future__ import annotations

import errno
import os.path as osp
import pickle
import re

import torch
from mmengine.runner.checkpoint import CheckpointLoader

from util.common.errors import DataError


def _checked(filename: str, load):
    try:
        checkpoint = load()
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, AttributeError) as e:
        reason = re.sub(r'\s+', ' ', str(e)).strip().split('. ')[0].rstrip('.')[:200]
        raise DataError(f'{filename}: not a readable checkpoint ({type(e).__name__}: {reason}); '
                        'truncated, or not a torch checkpoint?') from None
    if not isinstance(checkpoint, dict):
        raise DataError(f'{filename}: not a checkpoint (a {type(checkpoint).__name__}, expected a dict '
                        'of weights)')
    return checkpoint


def load_local_checkpoint(filename: str, map_location=None):
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(errno.ENOENT, 'checkpoint not found', filename)
    return _checked(filename, lambda: torch.load(filename, map_location=map_location, weights_only=False))


def load_http_checkpoint(filename: str, map_location=None, model_dir=None, progress=False):
    return _checked(filename, lambda: torch.hub.load_state_dict_from_url(
        filename, model_dir=model_dir, map_location=map_location, progress=progress, weights_only=False))


CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint, force=True)
CheckpointLoader.register_scheme(prefixes=('http://', 'https://'), loader=load_http_checkpoint, force=True)
