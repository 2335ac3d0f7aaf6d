"""tools/ensemble_search.py end to end: the chosen setting, written as an ensemble config and run by
tools/ensemble_test.py, gives the mAP the search reported on the held-out fold; a rerun resumes."""
import json
import os

import pytest
from _ensemble_helpers import save_checkpoint, subprocess_env, tiny_detector, write_ensemble
from conftest import REPO, run_cli

from util.metric.evaluate import evaluate_files
from util.search.members import split_folds

pytestmark = pytest.mark.slow

TINY = 'configs/tiny/cascade-mask-rcnn_r18-tiny_fpn_oid-leaf.py'


def gt_args(root):
    return ['--masks-csv', str(root / 'challenge-2019-validation-segmentation-masks.csv'), '--masks-dir', str(root),
            '--bbox-csv', str(root / 'challenge-2019-validation-segmentation-bbox.csv'),
            '--labels-csv', str(root / 'challenge-2019-validation-segmentation-labels.csv')]


def test_search_then_the_written_config_reproduces_the_held_out_map(synthetic_data, tmp_path):
    root = synthetic_data
    ckpts = [save_checkpoint(tiny_detector(seed, num_classes=None, max_per_img=20), str(tmp_path / f'w{seed}.pth'))
             for seed in (0, 1)]
    ens = write_ensemble(tmp_path / 'ens.py', [('a', TINY, ckpts[0]), ('b', TINY, ckpts[1])])
    space = tmp_path / 'space.py'
    space.write_text("space = dict(method=['wbf', 'nms'], iou_thr=(0.4, 0.7), weights=(0.5, 2.0),\n"
                     "             calibrate=[False, True], score_thr=[0.0, 0.05], max_per_img=[10, 20])\n")
    out = tmp_path / 'search'
    ann = str(root / 'annotations/leaf-val.pkl')
    args = [str(ens), '--space', str(space), '--ann-file', ann, '--images-dir', str(root), '--out', str(out),
            '--workers', '1', '--no-progress', *gt_args(root)]
    first = run_cli(['tools/ensemble_search.py', *args, '--trials', '3'], env=subprocess_env())
    assert 'best: trial' in first.stdout
    assert sorted(os.listdir(out / 'cache')) == ['a@160x128.csv', 'a@160x128.jsonl.gz', 'b@160x128.csv',
                                                 'b@160x128.jsonl.gz']
    again = run_cli(['tools/ensemble_search.py', *args, '--trials', '4'], env=subprocess_env())
    assert '1 trials run now, 3 finished before (resumed)' in again.stdout
    best = json.loads((out / 'best_setting.json').read_text())

    # The written config through the tester, the results -> CSV step and (if chosen) the expansion.
    results = tmp_path / 'best.jsonl.gz'
    run_cli(['tools/ensemble_test.py', str(out / 'best_ensemble.py'), '--ann-file', ann, '--images-dir', str(root),
             '--out', str(results), '--no-progress'], env=subprocess_env())
    sub = tmp_path / 'best.csv'
    run_cli(['-m', 'util.post.to_submission', str(results), '-o', str(sub)])
    if best['expand']:
        run_cli(['-m', 'util.post.expand', str(sub), '-o', str(tmp_path / 'expanded.csv')])
        sub = tmp_path / 'expanded.csv'
    fold_b = set(split_folds([line.split(',')[0] for line in sub.read_text().splitlines()[1:]], 0)[1])
    lines = sub.read_text().splitlines(True)
    held_out = tmp_path / 'fold_b.csv'
    held_out.write_text(lines[0] + ''.join(line for line in lines[1:] if line.split(',')[0] in fold_b))
    g = gt_args(root)
    value = evaluate_files(g[1], g[3], g[5], g[7], os.path.join(REPO, 'data/challenge-2019-label300-segmentable-hierarchy.json'),
                           os.path.join(REPO, 'data/challenge-2019-classes-description-segmentable.csv'),
                           str(held_out), log=lambda *a, **k: None, submitted_only=True).mean_ap
    assert value == best['fold_b']
