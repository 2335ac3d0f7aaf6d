"""Results -> submission CSV and the merge of shards, against slow versions; CLIs and bad input."""
import os

import numpy as np
from _post_reference import (
    encode,
    image_detections,
    read_csv,
    rle,
    run_cli,
    slow_convert,
    write_csv,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from util.post.merge import merge_submissions
from util.post.results_io import ResultsWriter
from util.post.to_submission import results_to_submission

CLASSES = ['/m/a', '/m/b', '/m/c', '/m/d']


@st.composite
def shard(draw, max_images=4):
    images = []
    for k in range(draw(st.integers(0, max_images))):
        h, w, dets = draw(image_detections(CLASSES))
        # Scores at full float precision here: the CSV rounds them, the order must use the originals.
        dets = [(lab, draw(st.one_of(st.just(s), st.floats(0, 1))), m) for lab, s, m in dets]
        images.append((f'id{k}', w, h, dets))
    return images


def write_results(path, images):
    with ResultsWriter(path, CLASSES) as w:
        for image_id, width, height, dets in images:
            w.write(image_id, width, height, [CLASSES.index(d[0]) for d in dets], [d[1] for d in dets],
                    [rle(d[2]) for d in dets])


def expected_rows(images, score_thr, top_k):
    rows = []
    for image_id, w, h, dets in images:
        triples = slow_convert(CLASSES, [CLASSES.index(d[0]) for d in dets], [d[1] for d in dets],
                               [d[2] for d in dets], score_thr, top_k)
        rows.append([image_id, str(w), str(h), ' '.join(' '.join(t) for t in triples)])
    return rows


@settings(max_examples=30, deadline=None)
@given(images=shard(), score_thr=st.sampled_from([0.0, 0.25, 0.5]), top_k=st.sampled_from([None, 0, 1, 3]))
def test_matches_slow_conversion(tmp_path_factory, images, score_thr, top_k):
    d = tmp_path_factory.mktemp('conv')
    write_results(str(d / 'r.jsonl'), images)
    out = str(d / 'sub.csv')
    results_to_submission(str(d / 'r.jsonl'), out, score_thr, top_k)
    assert read_csv(out) == expected_rows(images, score_thr, top_k)
    again = str(d / 'again.csv')
    results_to_submission(str(d / 'r.jsonl'), again, score_thr, top_k)
    assert open(out, 'rb').read() == open(again, 'rb').read()


def small_images(n, prefix='id', size=(3, 2)):
    w, h = size
    m = np.zeros((h, w), np.uint8)
    m[0, :] = 1
    return [(f'{prefix}{k}', w, h, [('/m/b', 0.5, m)] if k % 2 else []) for k in range(n)]


def test_id_list_fills_missing_images_and_checks_order(tmp_path):
    images = small_images(4)
    write_results(str(tmp_path / 'r.jsonl'), [images[1], images[3]])
    ids = tmp_path / 'ids.csv'
    ids.write_text('ImageID,ImageWidth,ImageHeight,PredictionString\n' +
                   ''.join(f'{i},{w},{h},\n' for i, w, h, _ in images))
    out = str(tmp_path / 'sub.csv')
    stats = results_to_submission(str(tmp_path / 'r.jsonl'), out, ids=str(ids))
    assert stats.missing_filled == 2
    assert [r[0] for r in read_csv(out)] == ['id0', 'id1', 'id2', 'id3']
    assert read_csv(out)[0] == ['id0', '3', '2', ''] and read_csv(out)[1][3]
    # Results out of the list's order: an error naming the results line, and no output.
    write_results(str(tmp_path / 'bad.jsonl'), [images[3], images[1]])
    p = run_cli('-m', 'util.post.to_submission', str(tmp_path / 'bad.jsonl'), '--ids', str(ids),
                '-o', str(tmp_path / 'bad.csv'))
    assert p.returncode != 0 and 'bad.jsonl:3: image id1' in p.stderr
    assert not os.path.exists(tmp_path / 'bad.csv') and not os.path.exists(tmp_path / 'bad.csv.tmp')
    # A plain id list has no sizes: a missing image cannot get a row.
    (tmp_path / 'ids.txt').write_text('id0\nid1\nid2\nid3\n')
    p = run_cli('-m', 'util.post.to_submission', str(tmp_path / 'r.jsonl'), '--ids',
                str(tmp_path / 'ids.txt'), '-o', str(tmp_path / 'x.csv'))
    assert p.returncode != 0 and 'image id0 is not in' in p.stderr and len(p.stderr.splitlines()) == 1


def test_cli_options_and_bad_results(tmp_path):
    images = [('a', 2, 2, [('/m/a', 0.9, np.eye(2)), ('/m/c', 0.2, np.ones((2, 2))),
                           ('/m/d', 0.6, np.zeros((2, 2)))])]
    write_results(str(tmp_path / 'r.jsonl.gz'), images)
    p = run_cli('-m', 'util.post.to_submission', str(tmp_path / 'r.jsonl.gz'), '-o',
                str(tmp_path / 's.csv'), '--score-thr', '0.3', '--top-k', '1')
    assert p.returncode == 0, p.stderr
    assert read_csv(str(tmp_path / 's.csv')) == [['a', '2', '2', f'/m/a 0.9 {encode(np.eye(2))}']]
    (tmp_path / 'broken.jsonl').write_bytes(b'{"format":"oid-results","version":1,"classes":["/m/a"]}\n'
                                            b'{"image_id":"a","width":2,"height":2,"labels":[4],'
                                            b'"scores":[0.5],"counts":["4"]}\n')
    p = run_cli('-m', 'util.post.to_submission', str(tmp_path / 'broken.jsonl'), '-o',
                str(tmp_path / 'b.csv'))
    assert p.returncode != 0 and 'broken.jsonl:2: image a: label index' in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not os.path.exists(tmp_path / 'b.csv')


# ---- merge ---------------------------------------------------------------------------------------
def write_sample(path, images):
    path.write_text('ImageID,ImageWidth,ImageHeight,PredictionString\n' +
                    ''.join(f'{i},{w},{h},\n' for i, w, h, _ in images))


@settings(max_examples=20, deadline=None)
@given(n=st.integers(0, 12), cuts=st.lists(st.integers(0, 12), max_size=3), data=st.data())
def test_merge_puts_shards_in_list_order(tmp_path_factory, n, cuts, data):
    d = tmp_path_factory.mktemp('merge')
    images = small_images(n)
    order = data.draw(st.permutations(range(n)))
    listed = [images[i] for i in order]               # the test list's order is not the id order
    write_sample(d / 'sample.csv', listed)
    bounds = sorted({0, n, *[min(c, n) for c in cuts]})
    shards = []
    for k, (a, b) in enumerate(zip(bounds, bounds[1:])):
        write_csv(str(d / f's{k}.csv'), listed[a:b])
        shards.append(str(d / f's{k}.csv'))
    shards = data.draw(st.permutations(shards))      # shards given in any order
    merge_submissions(shards, str(d / 'sample.csv'), str(d / 'out.csv'))
    want = [[i, str(w), str(h), ' '.join(f'{lab} {s:.6g} {encode(m)}' for lab, s, m in dets)]
            for i, w, h, dets in listed]
    assert read_csv(str(d / 'out.csv')) == want


def test_merge_errors_and_allow_missing(tmp_path):
    images = small_images(5)
    write_sample(tmp_path / 'sample.csv', images)
    write_csv(str(tmp_path / 'a.csv'), images[:2])
    write_csv(str(tmp_path / 'b.csv'), images[3:])
    args = ['-m', 'util.post.merge', str(tmp_path / 'a.csv'), str(tmp_path / 'b.csv'),
            '--ids', str(tmp_path / 'sample.csv'), '-o', str(tmp_path / 'out.csv')]
    p = run_cli(*args)
    assert p.returncode != 0 and 'image id2 is not the next image of any shard' in p.stderr
    assert not os.path.exists(tmp_path / 'out.csv')
    p = run_cli(*args, '--allow-missing')
    assert p.returncode == 0, p.stderr
    rows = read_csv(str(tmp_path / 'out.csv'))
    assert [r[0] for r in rows] == [f'id{k}' for k in range(5)] and rows[2] == ['id2', '3', '2', '']
    # An image in two shards, and a shard out of the list's order.
    write_csv(str(tmp_path / 'c.csv'), images[1:3])
    p = run_cli('-m', 'util.post.merge', str(tmp_path / 'a.csv'), str(tmp_path / 'c.csv'),
                '--ids', str(tmp_path / 'sample.csv'), '-o', str(tmp_path / 'x.csv'))
    assert p.returncode != 0 and 'a.csv:3: image id1 is also in' in p.stderr and 'c.csv:2' in p.stderr
    write_csv(str(tmp_path / 'd.csv'), [images[4], images[3]])
    p = run_cli('-m', 'util.post.merge', str(tmp_path / 'a.csv'), str(tmp_path / 'd.csv'),
                '--ids', str(tmp_path / 'sample.csv'), '-o', str(tmp_path / 'x.csv'), '--allow-missing')
    assert p.returncode != 0 and 'd.csv:3: image id3 is not in' in p.stderr
    assert not os.path.exists(tmp_path / 'x.csv')
