"""Draw an annotation file's masks, boxes and class names onto its images, to check a conversion by eye.

Each class gets a fixed colour (from its label index); masks are blended in, boxes outlined, names
written at the top-left corner of their box. One PNG per image, named ``{img_id}.png``.

    python -m util.data.draw ann/leaf_val.pkl --img-root D/validation --out work_dirs/drawn --limit 20
"""
from __future__ import annotations

import argparse
import os

from PIL import Image
from tqdm import tqdm

from ..common.atomic import AtomicWriter
from ..common.cli import run
from ..common.drawing import draw_item
from ..common.errors import DataError
from .annotations import load_annotations


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='python -m util.data.draw', description=__doc__.split('\n\n')[0])
    p.add_argument('annotations', help='annotation file (.pkl/.json)')
    p.add_argument('--img-root', required=True, help='folder the img_path entries are relative to')
    p.add_argument('--out', required=True, help='folder for the PNGs')
    p.add_argument('--limit', type=int, default=20, help='draw at most this many images (default 20; 0 = all)')
    p.add_argument('--image-id', action='append', default=None, help='draw only these images (repeatable)')
    p.add_argument('--alpha', type=float, default=0.45, help='mask opacity')
    return p.parse_args(argv)


def main(argv=None) -> None:
    a = parse_args(argv)
    ann = load_annotations(a.annotations)
    items = ann['data_list']
    if a.image_id:
        wanted = set(a.image_id)
        items = [it for it in items if it['img_id'] in wanted]
        missing = wanted - {it['img_id'] for it in items}
        if missing:
            raise DataError(f'{a.annotations}: no image {sorted(missing)[0]}')
    if a.limit:
        items = items[:a.limit]
    os.makedirs(a.out, exist_ok=True)
    for item in tqdm(items, desc='drawing', unit='img'):
        path = os.path.join(a.img_root, item['img_path'])
        try:
            image = Image.open(path)
        except FileNotFoundError:
            raise DataError(f'{path}: image of {item["img_id"]} not found') from None
        with AtomicWriter(os.path.join(a.out, f'{item["img_id"]}.png'), 'wb') as f:
            draw_item(image, item, ann['metainfo']['classes'], a.alpha).save(f, format='PNG')
    print(f'{a.out}: drew {len(items)} images')


if __name__ == '__main__':
    raise SystemExit(run(main))
