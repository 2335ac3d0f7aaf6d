"""util.post.draw: ground truth and predictions side by side, from real files."""
import numpy as np
from conftest import run_cli
from PIL import Image

from util.common.hierarchy import load_default
from util.common.mask_codec import rle_to_encoded
from util.common.submission import SubmissionWriter
from util.data.annotations import load_annotations


def test_gt_as_predictions_draws_two_equal_panels(synthetic_data, tmp_path):
    ann_path = synthetic_data / 'annotations/leaf-val.pkl'
    ann = load_annotations(str(ann_path))
    mids = ann['metainfo']['mids']
    sub = tmp_path / 'sub.csv'
    with SubmissionWriter(str(sub)) as w:
        for item in ann['data_list']:
            w.write(item['img_id'], item['width'], item['height'],
                    [(mids[i['bbox_label']], 0.9, rle_to_encoded(i['mask'])) for i in item['instances']])
    out = tmp_path / 'pics'
    proc = run_cli(['-m', 'util.post.draw', str(sub), '--annotations', str(ann_path),
                    '--img-root', str(synthetic_data), '--out', str(out), '--limit', '2'])
    assert 'wrote 2 pictures' in proc.stdout
    item = ann['data_list'][0]
    picture = Image.open(out / f'{item["img_id"]}.png')
    w, h = item['width'], item['height']
    assert picture.size == (2 * w + 6, h)
    left, right = picture.crop((0, 0, w, h)), picture.crop((w + 6, 0, 2 * w + 6, h))
    # Same masks, colours and names; only box outlines and name tags may differ (the annotated box vs the
    # mask's tight box), so every differing pixel lies near a box.
    diff = np.any(np.asarray(left) != np.asarray(right), axis=-1)
    near_box = np.zeros((h, w), bool)
    for inst in item['instances']:
        x1, y1, x2, y2 = (int(round(v)) for v in inst['bbox'])
        near_box[max(0, y1 - 16):y2 + 4, max(0, x1 - 4):x2 + 60] = True
    assert diff.any() or len(item['instances']) == 0
    assert not (diff & ~near_box).any()
    plain = Image.open(synthetic_data / item['img_path']).convert('RGB')
    assert list(left.getdata()) != list(plain.getdata())   # something was drawn


def test_unknown_label_is_a_one_line_error(synthetic_data, tmp_path):
    ann = load_annotations(str(synthetic_data / 'annotations/leaf-val.pkl'))
    item = ann['data_list'][0]
    sub = tmp_path / 'sub.csv'
    with SubmissionWriter(str(sub)) as w:
        w.write(item['img_id'], item['width'], item['height'],
                [('/m/nope', 0.9, rle_to_encoded(item['instances'][0]['mask']))])
    proc = run_cli(['-m', 'util.post.draw', str(sub), '--annotations',
                    str(synthetic_data / 'annotations/leaf-val.pkl'), '--img-root', str(synthetic_data),
                    '--out', str(tmp_path / 'p'), '--all-classes'], check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f'error: {sub}:2: image {item["img_id"]}: detection 1: unknown label /m/nope'
    assert load_default().name('/m/01yrx') == 'Cat'
