"""tools/train.py, test.py and convert_pretrained.py on bad input, as a user runs them: exit status 1 and
one line on stderr that names the file or the option, no traceback, nothing written."""
import os

import pytest
import torch
from conftest import TINY_LEAF, run_cli


def one_error_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope='module')
def truncated_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp('ckpt') / 'half.pth'
    torch.save({'state_dict': {'w': torch.zeros(2000, 100)}, 'meta': {}}, path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


def test_train_missing_config_bad_options_missing_resume(tmp_path):
    cases = [
        (['tools/train.py', 'configs/nope.py'], 'error: configs/nope.py: config file not found'),
        (['tools/train.py', TINY_LEAF, '--cfg-options', 'train_cfg.max_iters'],
         "error: --cfg-options 'train_cfg.max_iters': expected key=value"),
        (['tools/train.py', TINY_LEAF, '--resume', str(tmp_path / 'nope.pth')],
         f'error: {tmp_path / "nope.pth"}: --resume checkpoint not found'),
    ]
    for args, line in cases:
        assert one_error_line(run_cli([*args, '--work-dir', str(tmp_path / 'work')], check=False)) == line
    assert not (tmp_path / 'work').exists()


def test_test_missing_checkpoint(tmp_path):
    proc = run_cli(['tools/test.py', TINY_LEAF, str(tmp_path / 'gone.pth'), '--work-dir', str(tmp_path)],
                   check=False)
    assert one_error_line(proc) == f'error: {tmp_path / "gone.pth"}: checkpoint not found'


def test_convert_truncated_or_missing_checkpoint(tmp_path, truncated_checkpoint):
    proc = run_cli(['tools/convert_pretrained.py', str(truncated_checkpoint), str(tmp_path / 'out.pth')],
                   check=False)
    assert one_error_line(proc).startswith(f'error: {truncated_checkpoint}: not a readable checkpoint '
                                           '(RuntimeError: PytorchStreamReader failed reading zip archive')
    proc = run_cli(['tools/convert_pretrained.py', str(tmp_path / 'gone.pth'), str(tmp_path / 'out.pth')],
                   check=False)
    assert one_error_line(proc) == f'error: {tmp_path / "gone.pth"}: checkpoint not found'
    assert os.listdir(tmp_path) == []
