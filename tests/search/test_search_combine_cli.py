"""tools/ensemble_search.py with a parent ensemble: bad parent input is one line naming the file; end to end
(tiny models really run), the two written ensembles run by tools/ensemble_test.py and combined by the
command line best_setting.json states give the held-out mAP the search reported, to the last digit."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shlex

import pytest
from _ensemble_helpers import write_ensemble as ensemble
from conftest import REPO, run_cli

from util.common.cli import run
from util.common.hierarchy import load_default
from util.data.annotations import load_annotations, make_metainfo, save_annotations

TINY_LEAF = 'configs/tiny/cascade-mask-rcnn_r18-tiny_fpn_oid-leaf.py'
TINY_PARENT = 'configs/tiny/cascade-mask-rcnn_r18-tiny_fpn_oid-parent.py'


def gt_args(root):
    return ['--masks-csv', str(root / 'challenge-2019-validation-segmentation-masks.csv'), '--masks-dir', str(root),
            '--bbox-csv', str(root / 'challenge-2019-validation-segmentation-bbox.csv'),
            '--labels-csv', str(root / 'challenge-2019-validation-segmentation-labels.csv')]


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('ensemble_search_tool', os.path.join(REPO, 'tools/ensemble_search.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bad_parent_input_is_one_line_naming_the_file(tool, tmp_path, capsys):
    ckpt = tmp_path / 'never-loaded.pth'
    ckpt.write_bytes(b'')                   # the checks come before any model is loaded
    leaf = ensemble(tmp_path / 'leaf.py', [('a', TINY_LEAF, str(ckpt))])
    parent = ensemble(tmp_path / 'parent.py', [('p', TINY_PARENT, str(ckpt))])
    clash = ensemble(tmp_path / 'clash.py', [('a', TINY_PARENT, str(ckpt))])
    space = tmp_path / 'space.py'
    space.write_text("space = dict(combine=[True, False])\n")
    items = [dict(img_id=f'{i:016x}', img_path=f'{i}.jpg', height=40 + i, width=50, instances=[]) for i in range(4)]
    tree = load_default()
    ann = str(tmp_path / 'leaf-val.pkl')
    save_annotations(ann, make_metainfo(tree, 'leaf'), items)
    other_size = str(tmp_path / 'parent-size.pkl')
    save_annotations(other_size, make_metainfo(tree, 'parent'), items[:3] + [dict(items[3], height=99)])
    fewer = str(tmp_path / 'parent-fewer.pkl')
    save_annotations(fewer, make_metainfo(tree, 'parent'), items[1:])
    good = str(tmp_path / 'parent-val.pkl')
    save_annotations(good, make_metainfo(tree, 'parent'), items)
    base = [leaf, '--space', str(space), '--ann-file', ann, '--images-dir', str(tmp_path), '--out',
            str(tmp_path / 'out'), '--no-progress', *['--masks-csv', 'm', '--masks-dir', 'd', '--bbox-csv', 'b',
                                                      '--labels-csv', 'l']]
    cases = [
        (['--parent-config', parent, '--parent-ann-file', str(tmp_path / 'missing.pkl')],
         f'{tmp_path / "missing.pkl"}: annotation file not found'),
        (['--parent-config', parent, '--parent-ann-file', other_size],
         f'{other_size}: image {items[3]["img_id"]} is 50x99 (WxH), {ann} says 50x43'),
        (['--parent-config', parent, '--parent-ann-file', fewer], f'{fewer}: lacks image {items[0]["img_id"]} of {ann}'),
        (['--parent-config', clash, '--parent-ann-file', good], f"{clash}: member 'a' is also a member of {leaf}"),
        (['--parent-config', parent, '--parent-ann-file', ann],        # the leaf file again: leaf classes
         f'{ann}: class {make_metainfo(tree, "leaf")["mids"][0]} is also a class of {ann}'),
        (['--parent-config', parent, '--parent-ann-file', good, '--parent-checkpoints', 'x', 'y'],
         f'2 --parent-checkpoints for the 1 members of {parent}'),
    ]
    for extra, message in cases:
        assert run(tool.main, base + extra) == 1, extra
        err = capsys.readouterr().err
        assert err.startswith(f'error: {message}') and err.count('\n') == 1, err
    assert not os.path.exists(tmp_path / 'out' / 'cache')            # nothing ran
    # A parent file with more images: the parent ensemble predicts the leaf file's, with the parent classes.
    more = str(tmp_path / 'parent-more.pkl')
    save_annotations(more, make_metainfo(tree, 'parent'), items + [dict(items[0], img_id='ffff000000000000')])
    doc = load_annotations(tool.parent_images(ann, more, str(tmp_path / 'images.pkl')))
    assert doc['metainfo'] == make_metainfo(tree, 'parent') and doc['data_list'] == items
    with pytest.raises(SystemExit) as stop:                            # one without the other: a usage error
        tool.parse_args(base + ['--parent-config', parent])
    assert stop.value.code == 2
    assert '--parent-config and --parent-ann-file go together' in capsys.readouterr().err


def tiny_parent(seed: int, max_per_img: int = 20):
    """The slim parent config (23 classes), random weights from ``seed``, every detection kept."""
    import warnings

    import torch
    from _ensemble_helpers import spread_heads
    from mmdet.apis import init_detector

    from mmdet_ext.launch import load_config
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = init_detector(load_config(TINY_PARENT), checkpoint=None, device='cpu')
    spread_heads(model, seed)
    model.test_cfg.rcnn.score_thr = 0.0
    model.test_cfg.rcnn.max_per_img = max_per_img
    return model


def fold_rows(path, ids, out):
    lines = open(path).read().splitlines(True)
    out.write_text(lines[0] + ''.join(line for line in lines[1:] if line.split(',')[0] in ids))
    return str(out)


@pytest.mark.slow
def test_search_with_a_parent_ensemble_then_the_pipeline_reproduces_the_held_out_map(synthetic_data, tmp_path):
    from _ensemble_helpers import save_checkpoint, subprocess_env, tiny_detector

    from util.common.hierarchy import class_list
    from util.metric.evaluate import evaluate_files
    from util.search.members import MemberSet, split_folds
    root = synthetic_data
    ann = str(root / 'annotations/leaf-val.pkl')
    # The parent classes over the whole validation folder (a superset of the leaf file's images: build
    # drops the images without a leaf mask).
    run_cli(['-m', 'util.data.shards', '--images-dir', str(root / 'validation'), '--num-shards', '1', '--subset',
             'parent', '--out', str(tmp_path / 'parent-shards'), '--no-progress'])
    parent_ann = str(tmp_path / 'parent-shards' / 'shard_00_of_01.pkl')
    ckpts = [save_checkpoint(tiny_detector(seed, num_classes=None, max_per_img=20), str(tmp_path / f'w{seed}.pth'))
             for seed in (0, 1)]
    parent_ckpt = save_checkpoint(tiny_parent(2), str(tmp_path / 'parent.pth'))
    leaf = ensemble(tmp_path / 'leaf.py', [('a', TINY_LEAF, ckpts[0]), ('b', TINY_LEAF, ckpts[1])])
    parent = ensemble(tmp_path / 'parent.py', [('p', TINY_PARENT, parent_ckpt)])
    space = tmp_path / 'space.py'
    space.write_text("space = dict(method=['wbf', 'nms'], iou_thr=(0.4, 0.7), weights=(0.5, 2.0), score_thr=[0.0, 0.05],\n"
                     "             max_per_img=[10, 20], combine=True, combine_iou=(0.3, 0.7),\n"
                     "             combine_vote=[False, True], combine_max_dets=[None, 25])\n")
    out = tmp_path / 'search'
    args = [leaf, '--space', str(space), '--ann-file', ann, '--images-dir', str(root), '--out', str(out),
            '--workers', '1', '--no-progress', '--parent-config', parent, '--parent-ann-file', parent_ann,
            *gt_args(root)]
    first = run_cli(['tools/ensemble_search.py', *args, '--trials', '3'], env=subprocess_env())
    assert 'best: trial' in first.stdout and 'best_parent_ensemble.py' in first.stdout
    assert sorted(os.listdir(out / 'cache' / 'parent')) == ['images.pkl', 'p@160x128.csv', 'p@160x128.jsonl.gz']
    board = (out / 'leaderboard.csv').read_text()
    assert 'hand-set + parent combine (defaults)' in board and 'single p@' not in board
    # Resumed: the caches are reused (no model runs again), one more trial.
    stamp = os.path.getmtime(out / 'cache' / 'parent' / 'p@160x128.csv')
    again = run_cli(['tools/ensemble_search.py', *args, '--trials', '4'], env=subprocess_env())
    assert '1 trials run now, 3 finished before (resumed)' in again.stdout
    assert os.path.getmtime(out / 'cache' / 'parent' / 'p@160x128.csv') == stamp
    best = json.loads((out / 'best_setting.json').read_text())
    assert best['combine'] is True and set(best['weights']) == {'a', 'b', 'p'}
    for name in ('best_ensemble.py', 'best_parent_ensemble.py'):
        assert best['pipeline'] in (out / name).read_text(), name

    # The two written ensembles over the validation images (one "shard" each), then the stated command.
    results = {}
    for name, config, annotations in (('leaf', 'best_ensemble.py', ann),
                                      ('parent', 'best_parent_ensemble.py', str(out / 'cache/parent/images.pkl'))):
        os.makedirs(tmp_path / name)
        results[name] = str(tmp_path / name)
        run_cli(['tools/ensemble_test.py', str(out / config), '--ann-file', annotations, '--images-dir', str(root),
                 '--out', str(tmp_path / name / 'val.jsonl.gz'), '--no-progress'], env=subprocess_env())
    ids = tmp_path / 'ids.csv'
    with open(ids, 'w', newline='') as f:
        w = csv.writer(f, lineterminator='\n')
        w.writerow(['ImageID', 'ImageWidth', 'ImageHeight', 'PredictionString'])
        w.writerows([d['img_id'], d['width'], d['height'], ''] for d in load_annotations(ann)['data_list'])
    final = tmp_path / 'final.csv'
    command = shlex.split(best['pipeline'])
    assert command[:3] == ['python', '-m', 'util.post.pipeline']
    places = dict(LEAF_RESULTS_DIR=results['leaf'], PARENT_RESULTS_DIR=results['parent'], SAMPLE_SUBMISSION_CSV=str(ids),
                  WORK_DIR=str(tmp_path / 'work'), SUBMISSION_CSV=str(final))
    assert set(re.findall(r'\b[A-Z][A-Z_]+\b', best['pipeline'])) == set(places)
    run_cli([*command[1:3], *[places.get(a, a) for a in command[3:]], '--no-progress'])
    # The submission holds the detections the search's trial made from its cache, mask for mask (the
    # untrained models score 0 mAP here: the number alone would prove little).
    from pycocotools import mask as mask_utils

    from util.common.mask_codec import decode_encoded
    from util.common.submission import iter_submission
    from util.search.trial import setting_predictions

    def cached(folder):
        return MemberSet.from_files([(*name[:-4].split('@'), str(folder / name))
                                     for name in sorted(os.listdir(folder)) if name.endswith('.csv')])
    members = cached(out / 'cache').with_parent(cached(out / 'cache' / 'parent'))
    trial = setting_predictions(best, members, list(members.sizes))
    rows = {row.image_id: row for row in iter_submission(str(final))}
    assert set(rows) == set(trial)
    parent_labels = set(class_list('parent25'))
    assert any(d[0] in parent_labels for r in rows.values() for d in r.detections)      # the combine added some

    def dense(enc, row):
        return mask_utils.decode(decode_encoded(enc, row.height, row.width))
    for image_id, row in rows.items():
        made = list(zip(*trial[image_id]))
        assert [d[:2] for d in row.detections] == [d[:2] for d in made], image_id
        assert all((dense(a[2], row) == dense(b[2], row)).all() for a, b in zip(row.detections, made)), image_id
    image_ids = [line.split(',')[0] for line in final.read_text().splitlines()[1:]]
    held_out = fold_rows(final, set(split_folds(image_ids, 0)[1]), tmp_path / 'fold_b.csv')
    g = gt_args(root)
    value = evaluate_files(g[1], g[3], g[5], g[7], os.path.join(REPO, 'data/challenge-2019-label300-segmentable-hierarchy.json'),
                           os.path.join(REPO, 'data/challenge-2019-classes-description-segmentable.csv'),
                           held_out, log=lambda *a, **k: None, submitted_only=True).mean_ap
    assert value == best['fold_b']
