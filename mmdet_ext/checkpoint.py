"""Checkpoint loading under torch >= 2.6.

torch now loads with ``weights_only=True`` by default, and mmengine 0.10.7's runner checkpoints (they hold
``message_hub``, numpy scalars and the config) are refused: ``resume`` and ``load_from`` fail. We re-register
mmengine's local and http(s) schemes with loaders that pass ``weights_only=False``. Only load checkpoints you
trust: unpickling can run code.
"""
from __future__ import annotations

import os.path as osp

import torch
from mmengine.runner.checkpoint import CheckpointLoader


def load_local_checkpoint(filename: str, map_location=None):
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return torch.load(filename, map_location=map_location, weights_only=False)


def load_http_checkpoint(filename: str, map_location=None, model_dir=None, progress=False):
    return torch.hub.load_state_dict_from_url(
        filename, model_dir=model_dir, map_location=map_location, progress=progress, weights_only=False)


CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint, force=True)
CheckpointLoader.register_scheme(prefixes=('http://', 'https://'), loader=load_http_checkpoint, force=True)
