"""Config preparation shared by ``tools/train.py``, ``tools/test.py`` and the ensemble tester.

The entry points only parse arguments; everything a run needs (config merge, work dir, resume, AMP,
LR auto-scaling, CPU fallbacks) is decided here so that it is tested once and behaves the same everywhere.
Bad input (a missing config or checkpoint, a malformed ``--cfg-options``) is a ``DataError`` naming it.

``--cfg-options data_root=X`` moves every dataset and evaluator that read the config's ``data_root``
variable: mmengine substitutes variables while it parses, so a later override would reach only the
variable itself (see ``override_data_root``).
"""
from __future__ import annotations

import os
import os.path as osp
import warnings

from mmengine.config import Config, DictAction

from util.common.errors import DataError

from .device import apply_device_defaults, finish_distributed, init_cpu_distributed

# pkg_resources deprecation noise from mmengine/mmcv imports, not actionable for users.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)


def parse_cfg_options(items) -> dict:
    """``['key=value', ...]`` (mmengine's DictAction syntax: lists as ``key="[a,b]"``) -> dict."""
    options = {}
    for kv in items or ():
        key, sep, val = kv.partition('=')
        if not sep or not key:
            raise DataError(f'--cfg-options {kv!r}: expected key=value')
        try:
            options[key] = DictAction._parse_iterable(val)
        except (AssertionError, ValueError) as e:
            raise DataError(f'--cfg-options {kv!r}: {e}') from None
    return options


def override_data_root(cfg: Config, root: str) -> None:
    """Set ``data_root`` and every ``data_root`` entry (datasets, evaluators, wrapped datasets) that held
    the config's value of it, i.e. that read the variable; entries given another root keep theirs."""
    old = cfg.get('data_root')

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == 'data_root' and value == old:
                    node[key] = root
                else:
                    walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)

    if old is not None:
        walk(cfg._cfg_dict)
    cfg.data_root = root


def load_config(config: str, cfg_options: dict | list | None = None, work_dir: str | None = None,
                launcher: str = 'none') -> Config:
    """Read ``config``, apply ``cfg_options`` (a dict, or ``key=value`` strings), set the work dir and make
    sure the project's plugins are imported."""
    if not osp.isfile(config):
        raise DataError(f'{config}: config file not found')
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options and not isinstance(cfg_options, dict):
        cfg_options = parse_cfg_options(cfg_options)
    if cfg_options:
        cfg_options = dict(cfg_options)
        if 'data_root' in cfg_options:
            override_data_root(cfg, cfg_options.pop('data_root'))
        try:
            cfg.merge_from_dict(cfg_options)
        except (KeyError, TypeError, IndexError, AttributeError, ValueError) as e:
            raise DataError(f'--cfg-options {" ".join(f"{k}={v}" for k, v in cfg_options.items())}: '
                            f'{type(e).__name__}: {e}') from None
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    imports = cfg.get('custom_imports', {}).get('imports', [])
    if 'mmdet_ext' not in imports:
        cfg.custom_imports = dict(imports=list(imports) + ['mmdet_ext'], allow_failed_imports=False)
    return cfg


def prepare_train_config(cfg: Config, resume: str | None = None, amp: bool = False,
                         auto_scale_lr: bool = False) -> Config:
    """``resume``: None, 'auto' (latest checkpoint of the work dir) or a checkpoint path."""
    if amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise DataError('--auto-scale-lr: the config has no auto_scale_lr.base_batch_size')
        cfg.auto_scale_lr.enable = True
    if resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif resume is not None:
        if not osp.isfile(resume):
            raise DataError(f'{resume}: --resume checkpoint not found')
        cfg.resume, cfg.load_from = True, resume
    elif cfg.get('load_from'):
        cfg.load_from = resolve_checkpoint(cfg.load_from)
    return apply_device_defaults(cfg)


def resolve_checkpoint(path: str) -> str:
    """A checkpoint file, or a work dir whose ``last_checkpoint`` file names one (staged fine-tuning)."""
    if osp.isdir(path):
        marker = osp.join(path, 'last_checkpoint')
        if not osp.isfile(marker):
            raise DataError(f'{path}: load_from is a directory without a last_checkpoint file')
        with open(marker) as f:
            path = f.read().strip()
    return path


def prepare_test_config(cfg: Config, checkpoint: str, out: str | None = None,
                        show_dir: str | None = None) -> Config:
    checkpoint = resolve_checkpoint(checkpoint)
    if not osp.isfile(checkpoint):
        raise DataError(f'{checkpoint}: checkpoint not found')
    cfg.load_from = checkpoint
    if out is not None:
        if not out.endswith(('.pkl', '.pickle')):
            raise DataError(f'--out {out}: must be a .pkl file')
        dump = dict(type='DumpDetResults', out_file_path=out)
        evaluators = cfg.get('test_evaluator') or []
        if isinstance(evaluators, dict):
            evaluators = [evaluators]
        cfg.test_evaluator = list(evaluators) + [dump]
    if show_dir is not None:
        cfg.default_hooks.visualization.draw = True
        cfg.default_hooks.visualization.test_out_dir = show_dir
    return apply_device_defaults(cfg)


def add_runner_args(parser) -> None:
    """The options every runner entry point shares (mmdetection's names); pass ``--cfg-options`` to
    ``load_config`` as it comes (strings)."""
    parser.add_argument('--work-dir', help='where logs, checkpoints and metrics go '
                                           '(default work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action='extend', metavar='KEY=VALUE',
                        help='override config settings, key=value (lists as key="[a,b]"); data_root=DIR '
                             'moves every dataset and evaluator that reads data_root')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def set_local_rank(local_rank: int) -> None:
    """torch.distributed.launch passed --local-rank; torchrun sets LOCAL_RANK. Support both."""
    os.environ.setdefault('LOCAL_RANK', str(local_rank))


def build_runner(cfg: Config):
    init_cpu_distributed(cfg)
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    return RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)


def run_mode(cfg: Config, mode: str) -> None:
    """Build the runner, run ``mode`` ('train' or 'test') and close the process group on success."""
    getattr(build_runner(cfg), mode)()
    finish_distributed()
