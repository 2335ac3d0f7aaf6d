"""Drawing instances on images: the by-eye checks of annotation files and of predictions.

    class_colour(label)                 a fixed bright colour per class index
    draw_item(image, item, classes)     masks blended in, boxes outlined, class names written
    side_by_side(left, right)           two pictures in one, left and right
"""
from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw

from .errors import DataError
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


def side_by_side(left: Image.Image, right: Image.Image, gap: int = 6) -> Image.Image:
    """Both pictures on a white canvas, ``gap`` pixels apart."""
    out = Image.new('RGB', (left.width + gap + right.width, max(left.height, right.height)), (255, 255, 255))
    out.paste(left, (0, 0))
    out.paste(right, (left.width + gap, 0))
    return out
