"""Draw an annotation file's masks, boxes and class names onto its images, to check a conversion by eye.

Each class gets a fixed colour (from its label index); masks are blended in, boxes outlined, names
written at the top-left corner of their box. One PNG per image, named ``{img_id}.png``.

    python -m util.draw_annotations ann/leaf_val.pkl --img-root D/validation --out work_dirs/drawn --limit 20
"""
from __future__ import annotations

import argparse
import colorsys
import os

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from .annotations import load_annotations
from .atomic import AtomicWriter
from .cli import DataError, run
from .mask_codec import decode_rle


def class_colour(label: int) -> tuple[int, int, int]:
    """A bright colour per label; successive labels far apart in hue (golden-ratio steps)."""
    r, g, b = colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_item(image: Image.Image, item: dict, classes: list[str], alpha: float = 0.45) -> Image.Image:
    """The image with the item's instances drawn on it."""
    rgb = np.asarray(image.convert('RGB')).astype(np.float32)
    h, w = rgb.shape[:2]
    for inst in item['instances']:
        m = decode_rle(inst['mask']).astype(bool)
        if m.shape != (h, w):
            raise DataError(f'image {item["img_id"]}: mask size {list(m.shape)} is not the image size {[h, w]}')
        rgb[m] = (1 - alpha) * rgb[m] + alpha * np.asarray(class_colour(inst['bbox_label']), np.float32)
    out = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    for inst in item['instances']:
        colour = class_colour(inst['bbox_label'])
        x1, y1, x2, y2 = inst['bbox']
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colour, width=2)
        label = inst['bbox_label']
        name = classes[label] if 0 <= label < len(classes) else str(label)
        tx, ty = x1 + 2, max(0, y1 - 12)
        draw.rectangle(draw.textbbox((tx, ty), name), fill=(0, 0, 0))
        draw.text((tx, ty), name, fill=colour)
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='python -m util.draw_annotations', description=__doc__.split('\n\n')[0])
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
