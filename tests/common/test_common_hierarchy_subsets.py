"""Class subsets named by a preset or a class-list file: formats, hierarchy order, one-line errors."""
import argparse
import csv
import random

import pytest

from util.common.errors import DataError
from util.common.hierarchy import (
    DEFAULT_MASK_COUNTS,
    SUBSETS,
    class_list,
    load_default,
    read_mask_counts,
    subset_arg,
    subset_classes,
)

H = load_default()
# A few leaves and parents picked across the hierarchy, deliberately out of hierarchy order.
PICK = [H.leaves[200], H.parent_labels[3], H.leaves[0], H.leaves[57], H.parent_labels[0]]


def write(path, text, bom=False):
    path.write_bytes(('\ufeff' if bom else '').encode() + text.encode())
    return str(path)


@pytest.mark.parametrize('fmt', ['mids', 'google-csv', 'header', 'bom-and-comments'])
def test_every_format_gives_the_classes_in_hierarchy_order(tmp_path, fmt):
    shuffled = list(PICK)
    random.Random(0).shuffle(shuffled)
    if fmt == 'mids':
        text = ''.join(f'{m}\n' for m in shuffled)
    elif fmt == 'google-csv':
        text = ''.join(f'{m},"{H.name(m)}"\n' for m in shuffled)
    elif fmt == 'header':
        text = 'Name,LabelName,Extra\n' + ''.join(f'{H.name(m)},{m},x\n' for m in shuffled)
    else:
        text = '# experts\n\n' + ''.join(f'{m}\r\n' for m in shuffled) + '\n# end\n'
    path = write(tmp_path / 'classes.txt', text, bom=fmt == 'bom-and-comments')
    got = subset_classes(H, path)
    assert got == sorted(PICK, key=H.order.index)
    assert H.subset(path) == got and class_list(path, H) == got


def test_presets_are_unchanged_and_a_file_of_a_preset_equals_it(tmp_path):
    for name in SUBSETS:
        assert subset_classes(H, name) == H.subset(name)
    parent = subset_classes(H, 'parent23')
    path = write(tmp_path / 'p.csv', ''.join(f'{m},{H.name(m)}\n' for m in reversed(parent)))
    assert subset_classes(H, path) == parent
    # Google's own classes-description file is a class list of every class.
    assert subset_classes(H, 'data/challenge-2019-classes-description-segmentable.csv') == H.subset('all')


@pytest.mark.parametrize('text, message', [
    ('/m/0kmg4\n/m/nope\n', ':2: \'/m/nope\' is not a class of the hierarchy'),
    ('/m/0kmg4\n# c\n/m/04yx4\n/m/0kmg4\n', ':4: /m/0kmg4 listed twice (first on line 1)'),
    ('# only a comment\n\n', ': no classes in the class list'),
    ('', ': no classes in the class list'),
    ('Name,Mid\nTeddy bear,/m/0kmg4\n', ':1: expected a MID (/m/...) or a header with LabelName'),
    ('LabelName\n/m/0kmg4\nTeddy bear\n', ":3: 'Teddy bear' is not a class of the hierarchy"),
])
def test_bad_class_lists_are_one_error_naming_file_and_line(tmp_path, text, message):
    path = write(tmp_path / 'bad.txt', text)
    with pytest.raises(DataError) as e:
        subset_classes(H, path)
    assert str(e.value).startswith(path) and message in str(e.value)


def test_not_a_preset_nor_a_file(tmp_path):
    with pytest.raises(DataError, match='neither a file nor a class subset'):
        subset_classes(H, str(tmp_path / 'missing.txt'))
    with pytest.raises(argparse.ArgumentTypeError):
        subset_arg(str(tmp_path / 'missing.txt'))
    assert subset_arg('leaf') == 'leaf'
    path = write(tmp_path / 'x.txt', '/m/0kmg4\n')
    assert subset_arg(path) == path


def test_a_non_utf8_class_list_is_a_data_error(tmp_path):
    path = tmp_path / 'latin.txt'
    path.write_bytes('/m/0kmg4\nCaf\xe9\n'.encode('latin-1'))
    with pytest.raises(DataError, match='not UTF-8'):
        subset_classes(H, str(path))


def test_shipped_rare_leaf_list_is_the_100_rarest_leaves_by_train_masks():
    got = subset_classes(H, 'data/subsets/leaf-rare-100.txt')
    counts = read_mask_counts(DEFAULT_MASK_COUNTS)
    by_count = sorted(H.leaves, key=lambda m: counts.get(m, 0))
    assert len(got) == 100 and set(got) <= set(H.leaves)
    # Every listed class has no more masks than any leaf left out (ties may fall either side).
    threshold = counts.get(by_count[99], 0)
    assert max(counts.get(m, 0) for m in got) == threshold
    assert all(counts.get(m, 0) >= threshold for m in set(H.leaves) - set(got))
    with open('data/subsets/leaf-rare-100.txt', newline='') as f:
        rows = [r for r in csv.reader(f) if r and not r[0].startswith('#')]
    assert [r[0] for r in rows] == got and all(r[1] == H.name(r[0]) for r in rows)
