"""scripts/postprocess.sh end to end on two small generated shards, against the slow versions."""
import os
import shutil
import subprocess

import numpy as np

from _post_reference import (PY, REPO, SOME_LEAVES, SOME_PARENTS, read_csv, rle, same_dets, slow_cap,
                             slow_convert, slow_expand, slow_nms)
from util.common.hierarchy import load_default
from util.post.results_io import ResultsWriter

SCRIPT = os.path.join(REPO, 'scripts', 'postprocess.sh')


def make_shards(tmp_path):
    h = load_default()
    leaf_classes, parent_classes = h.subset('leaf'), h.subset('parent23')
    rng = np.random.default_rng(7)
    shards = {'shard_b': [f'img{k}' for k in range(3)], 'shard_a': [f'img{k}' for k in range(3, 5)]}
    sizes = {i: (int(rng.integers(4, 9)), int(rng.integers(4, 9))) for ids in shards.values() for i in ids}
    truth = {}

    def image_dets(labels, classes, w, hh, n):
        out = []
        for _ in range(n):
            m = np.zeros((hh, w), np.uint8)
            y, x = rng.integers(0, hh - 2), rng.integers(0, w - 2)
            m[y:y + rng.integers(2, hh), x:x + rng.integers(2, w)] = 1
            label = classes.index(labels[rng.integers(len(labels))])
            out.append((label, float(rng.choice([0.3, 0.5, 0.8])), m))
        return out

    for model, classes, labels in [('leaf', leaf_classes, SOME_LEAVES),
                                   ('parent', parent_classes, SOME_PARENTS)]:
        for name, ids in shards.items():
            suffix = '.jsonl.gz' if name == 'shard_a' else '.jsonl'
            with ResultsWriter(str(tmp_path / model / f'{name}{suffix}'), classes) as w:
                for i in ids:
                    width, height = sizes[i]
                    dets = image_dets(labels, classes, width, height, 0 if i == 'img1' else 5)
                    truth[model, i] = slow_convert(classes, [d[0] for d in dets], [d[1] for d in dets],
                                                   [d[2] for d in dets], top_k=4)
                    w.write(i, width, height, [d[0] for d in dets], [d[1] for d in dets],
                            [rle(d[2]) for d in dets])
    # The test list puts shard_a's images first; img9 is in shard_b's id list but has no results.
    order = ['img3', 'img4', 'img0', 'img1', 'img2', 'img9']
    sizes['img9'] = (7, 5)
    truth['leaf', 'img9'] = truth['parent', 'img9'] = []
    head = 'ImageID,ImageWidth,ImageHeight,PredictionString\n'
    (tmp_path / 'sample.csv').write_text(head + ''.join(f'{i},{sizes[i][0]},{sizes[i][1]},\n' for i in order))
    (tmp_path / 'ids').mkdir()
    (tmp_path / 'ids' / 'shard_b.csv').write_text(head + ''.join(
        f'{i},{sizes[i][0]},{sizes[i][1]},\n' for i in order[2:]))
    return order, sizes, truth


def run_script(tmp_path, *extra):
    return subprocess.run(['bash', SCRIPT, '--leaf-results', str(tmp_path / 'leaf'), '--parent-results',
                           str(tmp_path / 'parent'), '--ids', str(tmp_path / 'sample.csv'), '--work',
                           str(tmp_path / 'work'), '--out', str(tmp_path / 'out' / 'submission.csv'),
                           '--python', PY, *extra], capture_output=True, text=True)


def test_postprocess_script_end_to_end(tmp_path):
    order, sizes, truth = make_shards(tmp_path)
    options = ['--shard-ids', str(tmp_path / 'ids'), '--top-k', '4', '--vote', '--max-dets', '9']
    p = run_script(tmp_path, '--jobs', '2', *options)
    assert p.returncode == 0, p.stderr
    out = tmp_path / 'out' / 'submission.csv'
    rows = read_csv(str(out))
    assert [r[0] for r in rows] == order
    for row in rows:
        i, (w, h) = row[0], sizes[row[0]]
        assert row[1:3] == [str(w), str(h)]
        leaf = [(lab, float(s), enc) for lab, s, enc in truth['leaf', i]]
        parent = [(lab, float(s), enc) for lab, s, enc in truth['parent', i]]
        merged = slow_nms(slow_expand(leaf, parents_only=True) + slow_expand(parent), h, w, 0.5, vote=True)
        assert same_dets(row[3], slow_cap(leaf + merged, 9), h, w)
    first = out.read_bytes()

    # Finished: a rerun does nothing. Lost outputs are redone, byte for byte.
    p = run_script(tmp_path, *options)
    assert p.returncode == 0 and 'skip (done)' in p.stderr and out.read_bytes() == first
    out.unlink()
    shutil.rmtree(tmp_path / 'work' / 'parent_nms')
    p = run_script(tmp_path, *options)
    assert p.returncode == 0, p.stderr
    assert 'skip (done): ' + str(tmp_path / 'work' / 'leaf_csv' / 'shard_a.csv') in p.stderr
    assert 'util.post.mask_nms' in p.stderr and out.read_bytes() == first

    # A shard without its parent results: refused before any work.
    os.unlink(tmp_path / 'parent' / 'shard_b.jsonl')
    out.unlink()
    p = run_script(tmp_path)
    assert p.returncode != 0 and 'no results for shard shard_b' in p.stderr and not out.exists()
