"""The annotation file format: both encodings round-trip, bad files fail cleanly, class subsets."""
import os

import numpy as np
import pytest

from util.common.errors import DataError
from util.common.hierarchy import load_default
from util.common.mask_codec import decode_rle, encode_binary
from util.data.annotations import load_annotations, make_metainfo, save_annotations
from util.data.build import label_map

TEDDY, TOY, BEAR, CARNIVORE = '/m/0kmg4', '/m/0138tl', '/m/01dws', '/m/01lrl'


@pytest.fixture(scope='module')
def h():
    return load_default()


def sample(h):
    mask = np.zeros((6, 8), np.uint8)
    mask[1:4, 2:7] = 1
    meta = make_metainfo(h, 'leaf')
    items = [{'img_id': '0a1b2c3d4e5f6789', 'img_path': '0a1b2c3d4e5f6789.jpg', 'width': 8, 'height': 6,
              'instances': [{'bbox': [2.0, 1.0, 7.0, 4.0], 'bbox_label': 3, 'mask': encode_binary(mask),
                             'ignore_flag': 0}]},
             {'img_id': 'ffffffffffffffff', 'img_path': 'ffffffffffffffff.jpg', 'width': 5, 'height': 9,
              'instances': []}]
    return meta, items, mask


@pytest.mark.parametrize('ext', ['.pkl', '.json'])
def test_round_trip(tmp_path, h, ext):
    meta, items, mask = sample(h)
    path = str(tmp_path / f'ann{ext}')
    save_annotations(path, meta, items)
    doc = load_annotations(path)
    assert doc == {'metainfo': meta, 'data_list': items}
    inst = doc['data_list'][0]['instances'][0]
    assert isinstance(inst['mask']['counts'], str)
    assert (decode_rle(inst['mask']) == mask).all()
    assert os.listdir(tmp_path) == [f'ann{ext}']          # no temporary file left


def test_mmengine_reads_the_same_file(tmp_path, h):
    """The layout is mmengine's BaseDataset format: its own loader reads our files."""
    mmengine = pytest.importorskip('mmengine')
    meta, items, _ = sample(h)
    for ext in ('.pkl', '.json'):
        save_annotations(str(tmp_path / f'a{ext}'), meta, items)
        assert mmengine.load(str(tmp_path / f'a{ext}'))['data_list'] == items


def test_bad_files_fail_with_the_file_name(tmp_path, h):
    meta, items, _ = sample(h)
    with pytest.raises(DataError, match=r'ann\.txt: unknown annotation file extension'):
        save_annotations(str(tmp_path / 'ann.txt'), meta, items)
    with pytest.raises(DataError, match='missing.pkl: annotation file not found'):
        load_annotations(str(tmp_path / 'missing.pkl'))
    good = tmp_path / 'good.pkl'
    save_annotations(str(good), meta, items)
    cut = tmp_path / 'cut.pkl'
    cut.write_bytes(good.read_bytes()[:50])
    with pytest.raises(DataError, match=r'cut\.pkl: not a valid pickle'):
        load_annotations(str(cut))
    with pytest.raises(DataError, match='metainfo must have'):
        save_annotations(str(tmp_path / 'x.pkl'), {'classes': []}, items)
    assert not (tmp_path / 'x.pkl').exists() and not (tmp_path / 'x.pkl.tmp').exists()


def test_class_subset_sizes(h):
    sizes = {s: len(make_metainfo(h, s)['classes']) for s in
             ('leaf', 'parent25', 'parent', 'layer0', 'layer1', 'all')}
    assert sizes == {'leaf': 275, 'parent25': 25, 'parent': 23, 'layer0': 213, 'layer1': 87, 'all': 300}
    meta = make_metainfo(h, 'leaf')
    assert meta['classes'][meta['mids'].index(TEDDY)] == 'Teddy bear'


def test_teddy_bear_expands_to_its_three_ancestors(h):
    assert h.ancestors(TEDDY) == {TOY, BEAR, CARNIVORE}
    for subset, expected in (('parent25', {TOY, BEAR, CARNIVORE}), ('parent', {TOY, BEAR}),
                             ('leaf', {TEDDY})):
        mids = make_metainfo(h, subset)['mids']
        assert {mids[k] for k in label_map(h, subset, expand=subset != 'leaf')[TEDDY]} == expected
    # Without expansion a leaf is outside a parent subset; a parent is inside it as itself.
    assert label_map(h, 'parent', expand=False)[TEDDY] == ()
    parents = make_metainfo(h, 'parent25')['mids']
    assert [parents[k] for k in label_map(h, 'parent25', expand=True)[BEAR]] == [BEAR, CARNIVORE]
