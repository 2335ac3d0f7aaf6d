"""COCO export loads in pycocotools with the same masks; drawing writes one picture per image."""
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from PIL import Image
from pycocotools.coco import COCO

from util.common.cli import run
from util.common.mask_codec import decode_rle
from util.data.annotations import load_annotations, save_annotations
from util.data.build import build, make_source
from util.data.draw import main as draw_main
from util.data.synthetic import generate


@pytest.fixture(scope='module')
def ann(tmp_path_factory):
    out = tmp_path_factory.mktemp('oid')
    generate(str(out), seed=2, train=0, val=6, test=0, progress=False)
    meta, items, *_ = build([make_source(str(out / 'challenge-2019-validation-segmentation-masks.csv'))],
                            'parent25', progress=False)
    path = out / 'parent25.json'
    save_annotations(str(path), meta, items)
    return out, path


def test_coco_export_loads_in_pycocotools(ann, tmp_path):
    root, path = ann
    out = tmp_path / 'coco.json'
    r = subprocess.run([sys.executable, '-m', 'util.data.coco_export', str(path), '--out', str(out)],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = load_annotations(str(path))
    coco = COCO(str(out))
    cats = coco.loadCats(coco.getCatIds())
    assert [c['name'] for c in cats] == doc['metainfo']['classes'] and cats[0]['name'] == 'Toy'
    assert [c['mid'] for c in cats] == doc['metainfo']['mids']
    assert len(coco.getImgIds()) == len(doc['data_list'])
    for img_id, item in zip(sorted(coco.getImgIds()), doc['data_list']):
        img = coco.loadImgs(img_id)[0]
        assert (img['file_name'], img['width'], img['height'], img['oid_image_id']) == (
            item['img_path'], item['width'], item['height'], item['img_id'])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        assert len(anns) == len(item['instances'])
        for a, inst in zip(anns, item['instances']):
            m = coco.annToMask(a)
            assert (m == decode_rle(inst['mask'])).all() and a['area'] == m.sum()
            assert a['category_id'] == inst['bbox_label'] + 1
            x, y, w, h = a['bbox']
            assert [x, y, x + w, y + h] == pytest.approx(inst['bbox'])


def test_draw_annotations(ann, tmp_path):
    root, path = ann
    doc = load_annotations(str(path))
    out = tmp_path / 'drawn'
    img_root = root / 'validation'          # one source: img_path is relative to its images folder
    assert run(draw_main, [str(path), '--img-root', str(img_root), '--out', str(out), '--limit', '2']) == 0
    files = sorted(os.listdir(out))
    assert files == sorted(f'{i["img_id"]}.png' for i in doc['data_list'][:2])
    item = doc['data_list'][0]
    drawn = np.asarray(Image.open(out / f'{item["img_id"]}.png').convert('RGB'))
    original = np.asarray(Image.open(img_root / item['img_path']).convert('RGB'))
    assert drawn.shape == original.shape
    inside = decode_rle(item['instances'][0]['mask']).astype(bool)
    assert np.abs(drawn[inside].astype(int) - original[inside]).mean() > 10   # the mask is painted
    assert run(draw_main, [str(path), '--img-root', str(tmp_path), '--out', str(out / 'x')]) == 1
