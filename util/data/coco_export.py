"""Annotation file -> COCO instances JSON (for pycocotools, COCO-style tools and viewers).

Image ids become 1-based integers in data_list order (the Open Images id is kept as ``oid_image_id``);
category ids are ``bbox_label + 1``, named from the challenge's class CSV (the MID kept as ``mid``);
masks stay compressed RLE, boxes become [x, y, w, h] and ``area`` is the mask's pixel count.
``ignore_flag`` becomes ``iscrowd``.

    python -m util.data.coco_export ann/leaf_val.pkl --out ann/leaf_val.coco.json
"""
from __future__ import annotations

import argparse
import json

from pycocotools import mask as mask_utils

from ..common.atomic import AtomicWriter
from ..common.cli import run
from ..common.errors import DataError
from ..common.hierarchy import DEFAULT_CLASSES, read_class_names
from .annotations import load_annotations


def to_coco(ann: dict, names: dict[str, str]) -> dict:
    """``{'metainfo', 'data_list'}`` -> COCO dict with images, annotations, categories."""
    mids = ann['metainfo']['mids']
    categories = [{'id': k + 1, 'name': names.get(m, m), 'mid': m, 'supercategory': 'object'}
                  for k, m in enumerate(mids)]
    images, annotations = [], []
    for image_id, item in enumerate(ann['data_list'], start=1):
        images.append({'id': image_id, 'file_name': item['img_path'], 'width': item['width'],
                       'height': item['height'], 'oid_image_id': item['img_id']})
        for inst in item['instances']:
            label = inst['bbox_label']
            if not 0 <= label < len(mids):
                raise DataError(f'image {item["img_id"]}: bbox_label {label} outside the {len(mids)} classes')
            rle = inst['mask']
            counts = rle['counts']
            area = int(mask_utils.area({'size': rle['size'],
                                        'counts': counts.encode('ascii') if isinstance(counts, str) else counts}))
            x1, y1, x2, y2 = inst['bbox']
            annotations.append({'id': len(annotations) + 1, 'image_id': image_id, 'category_id': label + 1,
                                'segmentation': {'size': list(rle['size']), 'counts': counts},
                                'area': area, 'bbox': [x1, y1, x2 - x1, y2 - y1],
                                'iscrowd': int(inst.get('ignore_flag', 0))})
    return {'info': {'description': f'Open Images challenge 2019, subset {ann["metainfo"]["subset"]}'},
            'images': images, 'annotations': annotations, 'categories': categories}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='python -m util.data.coco_export', description=__doc__.split('\n\n')[0])
    p.add_argument('annotations', help='annotation file (.pkl/.json)')
    p.add_argument('--out', required=True, help='COCO instances JSON to write')
    p.add_argument('--classes-csv', default=DEFAULT_CLASSES, help='MID,Name CSV naming the categories')
    return p.parse_args(argv)


def main(argv=None) -> None:
    a = parse_args(argv)
    try:
        names = read_class_names(a.classes_csv)
    except (IndexError, UnicodeDecodeError):
        raise DataError(f'{a.classes_csv}: not a MID,Name CSV') from None
    ann = load_annotations(a.annotations)
    try:
        coco = to_coco(ann, names)
    except DataError as e:
        raise DataError(f'{a.annotations}: {e}') from None
    with AtomicWriter(a.out) as f:
        json.dump(coco, f, separators=(',', ':'))
    print(f'{a.out}: {len(coco["images"])} images, {len(coco["annotations"])} annotations, '
          f'{len(coco["categories"])} categories')


if __name__ == '__main__':
    raise SystemExit(run(main))
