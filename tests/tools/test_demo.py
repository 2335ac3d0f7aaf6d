"""The demo's own entry point, shrunk (few images, a few iterations), end to end; then rerun and reused."""
import csv
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

SMALL = dict(TRAIN_IMAGES='16', VAL_IMAGES='6', TEST_IMAGES='5', LEAF_ITERS='4', PARENT_ITERS='4', NUM_SHARDS='2',
             SEARCH_TRIALS='3')


def run_demo(demo_dir):
    env = dict(os.environ, DEMO_DIR=str(demo_dir), PYTHON=sys.executable, **SMALL)
    proc = subprocess.run(['scripts/demo.sh'], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout


def test_shrunken_demo_end_to_end(tmp_path):
    demo = tmp_path / 'demo'
    out = run_demo(demo)
    for stage in ('data', 'prepare', 'train', 'infer', 'post', 'evaluate', 'search', 'report'):
        assert f'== [{stage}]' in out
    report = (demo / 'report.md').read_text()
    table = report.split('## Validation mAP')[1].split('##')[0]
    maps = re.findall(r'\| ([^|]+) \| ([0-9.]+) \|', table)
    assert len(maps) == 8 and all(0.0 <= float(v) <= 1.0 for _, v in maps)
    assert '## Time per stage' in report and '![' in report
    assert '## Ensemble search' in report and (demo / 'search/best_ensemble.py').is_file()
    assert '| hand-set + parent ensemble' in report and '| final submission of the pipeline' in report
    for picture in re.findall(r'!\[[^\]]*\]\(([^)]+)\)', report):
        assert (demo / picture).is_file()
    # The test submission covers every test image, in the sample submission's order, and validated.
    with open(demo / 'submission.csv') as f, open(demo / 'data/sample_empty_submission.csv') as g:
        assert [r['ImageID'] for r in csv.DictReader(f)] == [r['ImageID'] for r in csv.DictReader(g)]
    # A second run reuses every finished stage.
    again = run_demo(demo)
    assert again.count('done before, reused') == 7
    assert 'Iter(train)' not in again
