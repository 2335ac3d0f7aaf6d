"""Device-aware config defaults: the same config runs on a GPU cluster and on a CPU-only machine.

On a machine without CUDA, ``AmpOptimWrapper`` (fp16) refuses to start and the ``nccl`` backend does not
exist. ``apply_device_defaults`` rewrites those two settings to fp32 ``OptimWrapper`` and ``gloo``, with a
warning (and wraps the model in DDP without device ids), so fp16 configs and distributed launches still run (slowly) for tests and demos.

mmengine's PyTorch launcher also calls ``torch.cuda.set_device`` unconditionally, which a CPU build of torch
does not have; ``init_cpu_distributed`` sets up the ``gloo`` process group first, so mmengine skips it.
"""
from __future__ import annotations

import datetime
import logging

import torch
from mmengine.config import Config
from mmengine.dist import is_distributed
from mmengine.logging import print_log

AMP_ONLY_KEYS = ('loss_scale', 'dtype', 'use_fsdp')


def _warn(msg: str) -> None:
    print_log(msg, logger='current', level=logging.WARNING)


def apply_device_defaults(cfg: Config, cuda_available: bool | None = None) -> Config:
    """Adapt ``cfg`` in place to this machine; returns it."""
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if cuda_available:
        return cfg
    optim = cfg.get('optim_wrapper')
    if optim is not None and optim.get('type') == 'AmpOptimWrapper':
        _warn('no CUDA device: AmpOptimWrapper (fp16) replaced by OptimWrapper (fp32)')
        optim.type = 'OptimWrapper'
        for key in AMP_ONLY_KEYS:
            optim.pop(key, None)
    dist_cfg = cfg.get('env_cfg', {}).get('dist_cfg')
    if dist_cfg is not None and dist_cfg.get('backend', 'nccl') == 'nccl':
        _warn("no CUDA device: distributed backend 'nccl' replaced by 'gloo'")
        dist_cfg.backend = 'gloo'
    if cfg.get('launcher', 'none') != 'none' and cfg.get('model_wrapper_cfg') is None:
        # mmengine wraps with DDP(device_ids=[LOCAL_RANK]), which DDP refuses for a CPU module.
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None,
                                     broadcast_buffers=False,
                                     find_unused_parameters=cfg.get('find_unused_parameters', False))
    return cfg


def init_cpu_distributed(cfg: Config, cuda_available: bool | None = None) -> bool:
    """Under torchrun on a machine without CUDA, start the gloo process group; returns True if it did."""
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if cuda_available or cfg.get('launcher', 'none') != 'pytorch' or is_distributed():
        return False
    timeout = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('timeout')
    kwargs = {} if timeout is None else {'timeout': datetime.timedelta(seconds=timeout)}
    torch.distributed.init_process_group(backend='gloo', **kwargs)
    return True


def finish_distributed() -> None:
    """Wait for every rank, then tear the process group down.

    Leaving it to interpreter shutdown lets gloo's worker threads outlive Python, and the process dies of
    ``terminate called without an active exception`` (SIGABRT) after a run that did finish."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
