"""util.post.pipeline: the chain end to end (CLI and wrapper script), against the slow versions and
against the library steps run one by one; the job pool, resuming, shard discovery."""
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
from _post_reference import (
    PY,
    REPO,
    SOME_LEAVES,
    SOME_PARENTS,
    read_csv,
    rle,
    same_dets,
    slow_cap,
    slow_convert,
    slow_expand,
    slow_nms,
)

from util.common.errors import DataError
from util.common.hierarchy import load_default
from util.post.combine import combine_leaf_and_parent
from util.post.expand import Expander, expand_submission
from util.post.mask_nms import mask_nms_submissions
from util.post.merge import merge_submissions
from util.post.pipeline import (
    Options,
    chain_plan,
    discover_shards,
    postprocess,
    results_dir_to_submission,
    run_steps,
)
from util.post.results_io import ResultsWriter
from util.post.to_submission import results_to_submission

SCRIPT = os.path.join(REPO, 'scripts', 'postprocess.sh')


def make_shards(tmp_path, n_dets=5):
    """Two shards (one .jsonl, one .jsonl.gz) of leaf and parent results; the test list interleaves
    them and names an image (img9) that shard_b's id list has but its results lack."""
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
                    dets = image_dets(labels, classes, width, height, 0 if i == 'img1' else n_dets)
                    truth[model, i] = slow_convert(classes, [d[0] for d in dets], [d[1] for d in dets],
                                                   [d[2] for d in dets], top_k=4)
                    w.write(i, width, height, [d[0] for d in dets], [d[1] for d in dets],
                            [rle(d[2]) for d in dets])
    order = ['img3', 'img4', 'img0', 'img1', 'img2', 'img9']
    sizes['img9'] = (7, 5)
    truth['leaf', 'img9'] = truth['parent', 'img9'] = []
    head = 'ImageID,ImageWidth,ImageHeight,PredictionString\n'
    (tmp_path / 'sample.csv').write_text(head + ''.join(f'{i},{sizes[i][0]},{sizes[i][1]},\n' for i in order))
    (tmp_path / 'ids').mkdir()
    (tmp_path / 'ids' / 'shard_b.csv').write_text(head + ''.join(
        f'{i},{sizes[i][0]},{sizes[i][1]},\n' for i in order[2:]))
    return order, sizes, truth


def run_script(tmp_path, *extra, work='work', out='out/submission.csv'):
    return subprocess.run(['bash', SCRIPT, '--python', PY, '--leaf-results', str(tmp_path / 'leaf'),
                           '--parent-results', str(tmp_path / 'parent'), '--ids', str(tmp_path / 'sample.csv'),
                           '--work', str(tmp_path / work), '--out', str(tmp_path / out), '--no-progress',
                           *extra], capture_output=True, text=True, timeout=300)


def options_of(tmp_path):
    return ['--shard-ids', str(tmp_path / 'ids'), '--top-k', '4', '--vote', '--max-dets', '9']


OPTIONS = Options(top_k=4, vote=True, max_dets=9)


def test_postprocess_script_end_to_end(tmp_path):
    order, sizes, truth = make_shards(tmp_path)
    p = run_script(tmp_path, '--jobs', '2', *options_of(tmp_path))
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
    assert 'valid: 2 run' in p.stderr
    first = out.read_bytes()

    # Finished: a rerun does nothing. A lost step output is redone, and only it.
    p = run_script(tmp_path, *options_of(tmp_path))
    assert p.returncode == 0 and 'skip (done)' in p.stderr and out.read_bytes() == first
    out.unlink()
    shutil.rmtree(tmp_path / 'work' / 'parent_nms')
    p = run_script(tmp_path, *options_of(tmp_path))
    assert p.returncode == 0, p.stderr
    assert 'parent_nms: 2 run, 0 done before' in p.stderr and 'leaf_csv: 0 run, 2 done before' in p.stderr
    assert out.read_bytes() == first

    # A shard without its parent results: refused before any work, one line.
    os.unlink(tmp_path / 'parent' / 'shard_b.jsonl')
    out.unlink()
    p = run_script(tmp_path)
    assert p.returncode == 1 and not out.exists()
    assert p.stderr.strip().splitlines() == [
        f'error: {tmp_path / "parent"}: no results for shard shard_b (shard_b.jsonl or shard_b.jsonl.gz)']


def step_by_step(tmp_path, work, out, top_k=4, vote=True, max_dets=9):
    """The chain through the individual library functions, one call per shard and step."""
    h = load_default()
    w = lambda name: str(tmp_path / work / name)
    os.makedirs(tmp_path / work, exist_ok=True)
    combined = []
    for name, suffix in [('shard_a', '.jsonl.gz'), ('shard_b', '.jsonl')]:
        ids = str(tmp_path / 'ids' / 'shard_b.csv') if name == 'shard_b' else None
        results_to_submission(str(tmp_path / 'leaf' / (name + suffix)), w(f'{name}.leaf.csv'), 0.0, top_k, ids)
        results_to_submission(str(tmp_path / 'parent' / (name + suffix)), w(f'{name}.parent.csv'), 0.0, top_k, ids)
        expand_submission(w(f'{name}.leaf.csv'), w(f'{name}.lp.csv'), Expander(h, parents_only=True))
        expand_submission(w(f'{name}.parent.csv'), w(f'{name}.pe.csv'), Expander(h))
        mask_nms_submissions([w(f'{name}.lp.csv'), w(f'{name}.pe.csv')], w(f'{name}.nms.csv'), 0.5, vote)
        combine_leaf_and_parent(w(f'{name}.leaf.csv'), [w(f'{name}.nms.csv')], w(f'{name}.c.csv'),
                                max_dets=max_dets)
        combined.append(w(f'{name}.c.csv'))
    merge_submissions(combined, str(tmp_path / 'sample.csv'), str(tmp_path / out))
    return (tmp_path / out).read_bytes()


@pytest.mark.parametrize('max_dets', [9, None])
def test_pipeline_equals_the_steps_one_by_one_with_1_and_2_jobs(tmp_path, max_dets):
    make_shards(tmp_path, n_dets=6)
    want = step_by_step(tmp_path, 'steps', 'steps.csv', max_dets=max_dets)
    options = Options(top_k=4, vote=True, max_dets=max_dets)
    for jobs in (1, 2):
        assert postprocess(str(tmp_path / 'leaf'), str(tmp_path / 'parent'), str(tmp_path / 'sample.csv'),
                           str(tmp_path / f'w{jobs}'), str(tmp_path / f'j{jobs}.csv'), options,
                           str(tmp_path / 'ids'), jobs=jobs)
        assert (tmp_path / f'j{jobs}.csv').read_bytes() == want
        # and every intermediate file is the one-by-one step's
        for step, short in [('leaf_csv', 'leaf'), ('parent_nms', 'nms'), ('combined', 'c')]:
            for name in ('shard_a', 'shard_b'):
                assert (tmp_path / f'w{jobs}' / step / f'{name}.csv').read_bytes() == \
                    (tmp_path / 'steps' / f'{name}.{short}.csv').read_bytes()
    assert postprocess(str(tmp_path / 'leaf'), str(tmp_path / 'parent'), str(tmp_path / 'sample.csv'),
                       str(tmp_path / 'w1'), str(tmp_path / 'j1.csv'), options) is False     # done before


def plan(tmp_path, work='work'):
    shards = discover_shards(str(tmp_path / 'leaf'), str(tmp_path / 'parent'), str(tmp_path / 'ids'))
    return [s for shard in shards for s in chain_plan(shard, str(tmp_path / work), str(tmp_path / 'sample.csv'),
                                                      OPTIONS)]


def outputs_state(steps):
    return {s.output: (os.stat(s.output).st_ino, os.stat(s.output).st_mtime_ns) for s in steps}


@pytest.mark.parametrize('jobs', [1, 2])
def test_resume_runs_only_missing_outputs_and_ignores_temp_files(tmp_path, jobs):
    make_shards(tmp_path)
    steps = plan(tmp_path)
    assert [(s.shard, s.name) for s in steps[:2]] == [('shard_a', 'leaf_csv'), ('shard_a', 'parent_csv')]
    assert run_steps(steps, jobs) == [True] * len(steps)
    before = outputs_state(steps)
    content = {s.output: open(s.output, 'rb').read() for s in steps}
    assert run_steps(steps, jobs) == [False] * len(steps)             # all done: nothing runs
    assert outputs_state(steps) == before

    # A kill in the middle of two steps: one output lost, another left as a half-written temp file.
    lost = next(s for s in steps if (s.shard, s.name) == ('shard_a', 'parent_nms'))
    torn = next(s for s in steps if (s.shard, s.name) == ('shard_b', 'combined'))
    os.unlink(lost.output)
    os.unlink(torn.output)
    with open(torn.output + '.tmp', 'wb') as f:
        f.write(content[torn.output][:len(content[torn.output]) // 2])
    time.sleep(0.01)
    ran = run_steps(steps, jobs)
    assert [s for s, r in zip(steps, ran) if r] == [lost, torn]
    after = outputs_state(steps)
    for s in steps:
        assert open(s.output, 'rb').read() == content[s.output]
        assert (after[s.output] == before[s.output]) == (s not in (lost, torn))
    assert not os.path.exists(torn.output + '.tmp')


@pytest.mark.parametrize('jobs', [1, 2])
def test_a_failing_shard_fails_the_run_with_its_name(tmp_path, jobs):
    make_shards(tmp_path)
    (tmp_path / 'leaf' / 'shard_b.jsonl').write_text('this is not a results file\n')
    steps = plan(tmp_path)
    with pytest.raises(DataError) as e:
        run_steps(steps, jobs)
    message = str(e.value)
    assert message.startswith('shard shard_b: leaf_csv: ') and 'shard_b.jsonl' in message
    assert '\n' not in message
    # Nothing of the failed step is left under its name or its temp name, nor of the steps after it.
    failed = next(s for s in steps if (s.shard, s.name) == ('shard_b', 'leaf_csv'))
    assert not os.path.exists(failed.output) and not os.path.exists(failed.output + '.tmp')
    downstream = ('leaf_parents', 'parent_nms', 'combined', 'valid')      # they need the failed step
    assert all(not os.path.exists(s.output) for s in steps if s.shard == 'shard_b' and s.name in downstream)


def test_cli_failure_is_one_line_and_leaves_no_output(tmp_path):
    make_shards(tmp_path)
    (tmp_path / 'leaf' / 'shard_b.jsonl').write_text('this is not a results file\n')
    p = run_script(tmp_path, '--jobs', '2')
    assert p.returncode == 1 and not (tmp_path / 'out' / 'submission.csv').exists()
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: shard shard_b: leaf_csv: ') and 'Traceback' not in p.stderr


def test_killed_run_resumes_to_the_same_bytes(tmp_path):
    make_shards(tmp_path, n_dets=8)
    p = run_script(tmp_path, *options_of(tmp_path), work='ref', out='ref.csv')
    assert p.returncode == 0, p.stderr
    args = ['bash', SCRIPT, '--python', PY, '--leaf-results', str(tmp_path / 'leaf'), '--parent-results',
            str(tmp_path / 'parent'), '--ids', str(tmp_path / 'sample.csv'), '--work', str(tmp_path / 'work'),
            '--out', str(tmp_path / 'out.csv'), '--no-progress', '--jobs', '2', *options_of(tmp_path)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while not (tmp_path / 'work' / 'leaf_csv').is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)                     # the pipeline and its workers
    proc.wait()
    assert not (tmp_path / 'out.csv').exists() or proc.returncode == 0
    p = run_script(tmp_path, *options_of(tmp_path), out='out.csv')
    assert p.returncode == 0, p.stderr
    assert (tmp_path / 'out.csv').read_bytes() == (tmp_path / 'ref.csv').read_bytes()


def test_discover_shards(tmp_path):
    make_shards(tmp_path)
    shards = discover_shards(str(tmp_path / 'leaf'), str(tmp_path / 'parent'), str(tmp_path / 'ids'))
    assert [(s.name, os.path.basename(s.leaf), os.path.basename(s.parent), s.ids and os.path.basename(s.ids))
            for s in shards] == [('shard_a', 'shard_a.jsonl.gz', 'shard_a.jsonl.gz', None),
                                 ('shard_b', 'shard_b.jsonl', 'shard_b.jsonl', 'shard_b.csv')]
    (tmp_path / 'leaf' / 'shard_b.jsonl.partial').write_text('')      # a tester's unfinished file
    assert len(discover_shards(str(tmp_path / 'leaf'), str(tmp_path / 'parent'))) == 2
    shutil.copy(tmp_path / 'parent' / 'shard_b.jsonl', tmp_path / 'parent' / 'shard_c.jsonl')
    with pytest.raises(DataError, match=r'shard_c.jsonl: no leaf results for shard shard_c in '):
        discover_shards(str(tmp_path / 'leaf'), str(tmp_path / 'parent'))
    shutil.copy(tmp_path / 'leaf' / 'shard_b.jsonl', tmp_path / 'leaf' / 'shard_b.jsonl.gz')
    with pytest.raises(DataError, match=r'both shard_b.jsonl and shard_b.jsonl.gz'):
        discover_shards(str(tmp_path / 'leaf'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(DataError, match=r'empty: no results files'):
        discover_shards(str(tmp_path / 'empty'))
    with pytest.raises(DataError, match=r'nowhere: no such results folder'):
        discover_shards(str(tmp_path / 'nowhere'))


def test_one_model_results_to_submission(tmp_path):
    make_shards(tmp_path)
    # The same steps one by one: results -> CSV per shard, then the merge.
    for name, suffix in [('shard_a', '.jsonl.gz'), ('shard_b', '.jsonl')]:
        results_to_submission(str(tmp_path / 'leaf' / (name + suffix)), str(tmp_path / f'{name}.csv'),
                              ids=str(tmp_path / 'ids' / 'shard_b.csv') if name == 'shard_b' else None)
    merge_submissions([str(tmp_path / 'shard_a.csv'), str(tmp_path / 'shard_b.csv')], str(tmp_path / 'sample.csv'),
                      str(tmp_path / 'want.csv'))
    assert results_dir_to_submission(str(tmp_path / 'leaf'), str(tmp_path / 'sample.csv'), str(tmp_path / 'got.csv'),
                                     str(tmp_path / 'work'), shard_ids=str(tmp_path / 'ids'), jobs=2)
    assert (tmp_path / 'got.csv').read_bytes() == (tmp_path / 'want.csv').read_bytes()
    assert sorted(os.listdir(tmp_path / 'work')) == ['csv', 'valid']
    # The CLI's one-model form; without the shard id lists img9 is in no shard: a one-line error.
    p = subprocess.run([PY, '-m', 'util.post.pipeline', '--results', str(tmp_path / 'leaf'), '--ids',
                        str(tmp_path / 'sample.csv'), '--work', str(tmp_path / 'w2'), '--out',
                        str(tmp_path / 'o2.csv'), '--no-progress'], capture_output=True, text=True, cwd=REPO,
                       timeout=120)
    assert p.returncode == 1 and not (tmp_path / 'o2.csv').exists()
    assert p.stderr.strip().splitlines()[-1].startswith('error: ') and 'img9' in p.stderr
    assert 'Traceback' not in p.stderr


def test_invalid_shard_stops_before_the_merge(tmp_path):
    """Validation runs per shard: an invalid combined CSV (here a mask of the wrong size, planted as a
    finished step output) fails the run naming it, and no submission appears."""
    make_shards(tmp_path)
    steps = plan(tmp_path)
    run_steps([s for s in steps if s.name != 'valid'])
    combined = tmp_path / 'work' / 'combined' / 'shard_a.csv'
    rows = combined.read_text().splitlines()
    image_id, w, h, text = rows[1].split(',')
    rows[1] = ','.join([image_id, str(int(w) + 1), h, text])
    combined.write_text('\n'.join(rows) + '\n')
    p = run_script(tmp_path, *options_of(tmp_path))
    assert p.returncode == 1 and not (tmp_path / 'out' / 'submission.csv').exists()
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith('error: shard shard_a: valid: ') and 'combined/shard_a.csv:2' in line
