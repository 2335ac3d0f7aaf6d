"""util.post.merge: every listed id exactly once, in the list's order, or a one-line error naming the
shard's line (the pipeline relies on it instead of validating the merged file again)."""
import os

import pytest
from _post_reference import read_csv, run_cli

HEAD = 'ImageID,ImageWidth,ImageHeight,PredictionString\n'
DET = '/m/01dws 0.5 eJwzBAAAMgAy'


def sample(tmp_path, ids):
    (tmp_path / 'sample.csv').write_text(HEAD + ''.join(f'{i},2,2,\n' for i in ids))


def merge(tmp_path, *shards, extra=()):
    return run_cli('-m', 'util.post.merge', *[str(tmp_path / s) for s in shards], '--ids',
                   str(tmp_path / 'sample.csv'), '-o', str(tmp_path / 'out.csv'), '--no-progress', *extra)


def test_merged_rows_are_the_shards_rows_in_list_order(tmp_path):
    sample(tmp_path, ['c', 'a', 'd', 'b'])
    (tmp_path / 's1.csv').write_text(HEAD + f'c,2,2,{DET}\nd,2,2,\n')
    (tmp_path / 's2.csv').write_text(HEAD + 'a,2,2,\nb,2,2,' + DET.replace('0.5', '0.25') + '\n')
    p = merge(tmp_path, 's2.csv', 's1.csv')
    assert p.returncode == 0, p.stderr
    assert read_csv(str(tmp_path / 'out.csv')) == [['c', '2', '2', DET], ['a', '2', '2', ''], ['d', '2', '2', ''],
                                                    ['b', '2', '2', DET.replace('0.5', '0.25')]]


@pytest.mark.parametrize('s1, s2, where', [
    ('a,2,2,\nb,2,2,\n', 'b,2,2,\nc,2,2,\n', 's2.csv:2'),          # b in two shards
    ('a,2,2,\na,2,2,\n', 'b,2,2,\nc,2,2,\n', 's1.csv:3'),          # a twice in one shard
    ('a,2,2,\nz,2,2,\n', 'b,2,2,\nc,2,2,\n', 's1.csv:3'),          # z is not a test image
    ('c,2,2,\na,2,2,\n', 'b,2,2,\n', 'sample.csv'),                # a shard out of the list's order
])
def test_anything_but_each_id_once_in_order_is_an_error(tmp_path, s1, s2, where):
    sample(tmp_path, ['a', 'b', 'c'])
    (tmp_path / 's1.csv').write_text(HEAD + s1)
    (tmp_path / 's2.csv').write_text(HEAD + s2)
    p = merge(tmp_path, 's1.csv', 's2.csv')
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1 and where in lines[0], p.stderr
    assert not os.path.exists(tmp_path / 'out.csv') and not os.path.exists(tmp_path / 'out.csv.tmp')
