"""Image sizes and mask PNGs, read the cheap way.

Image sizes come from the file header (PIL opens lazily and never decodes the pixels), so sizing a
million JPEGs costs file opens, not decodes. Mask PNGs are read with OpenCV, which handles the 1-bit
and 8-bit PNGs alike and is faster than PIL at decoding.
"""
from __future__ import annotations

import os

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')


def image_size(path: str) -> tuple[int, int]:
    """(width, height) from the image header."""
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise DataError(f'{path}: image not found') from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f'{path}: not a readable image ({e})') from None


def read_mask(path: str) -> np.ndarray:
    """A mask PNG as a uint8 array of 0/1 (any non-zero pixel is foreground)."""
    m = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if m is None:
        if not os.path.exists(path):
            raise DataError(f'{path}: mask PNG not found')
        raise DataError(f'{path}: not a readable PNG')
    return np.greater(m, 0).view(np.uint8)


def list_image_ids(folder: str) -> list[str]:
    """Image ids (file names without extension) of the images in ``folder``, sorted."""
    if not os.path.isdir(folder):
        raise DataError(f'{folder}: not a folder')
    return sorted(os.path.splitext(n)[0] for n in os.listdir(folder)
                  if n.lower().endswith(IMAGE_EXTENSIONS))
