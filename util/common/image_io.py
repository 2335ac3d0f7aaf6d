"""Images and mask PNGs: finding them, their sizes, and reading them, each in one place.

    find_image(images_dir, image_id, where)   the {ImageID}.jpg/.jpeg/.png of an image (any case)
    image_size(path)                          (width, height) from the header: opens, never decodes
    decoded_image_size(path)                  (width, height) after a full decode: what --strict trusts
    read_mask(path)                           a mask PNG as uint8 0/1
    list_image_ids(folder)                    the image ids in a folder

Sizing from the header keeps a million JPEGs cheap (file opens, not decodes), but a file cut short keeps
its header: only a full decode proves an image readable. Everything is read with PIL, which reports a
damaged file as an exception and prints nothing itself (libpng and libjpeg, under OpenCV, write their
own lines to stderr beside ours).
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError
from .oid_files import IMAGE_EXTENSIONS


def find_image(images_dir: str, image_id: str, where: str = '') -> str:
    """Path of ``image_id``'s image in ``images_dir``; DataError (prefixed by ``where``) if there is none."""
    for ext in IMAGE_EXTENSIONS:
        for e in (ext, ext.upper()):
            path = os.path.join(images_dir, image_id + e)
            if os.path.isfile(path):
                return path
    prefix = f'{where}: ' if where else ''
    raise DataError(f'{prefix}no image {image_id}.jpg (or .jpeg/.png) in {images_dir}')


def _open(path: str, what: str):
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise DataError(f'{path}: {what} not found') from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f'{path}: not a readable {what} ({e})') from None


def image_size(path: str) -> tuple[int, int]:
    """(width, height) from the image header."""
    with _open(path, 'image') as im:
        return im.size


def decoded_image_size(path: str) -> tuple[int, int]:
    """(width, height) of an image that decodes completely (a truncated or corrupt file is a DataError)."""
    with _open(path, 'image') as im:
        try:
            im.load()
        except (OSError, ValueError, SyntaxError) as e:
            raise DataError(f'{path}: image does not decode ({e})') from None
        return im.size


def read_mask(path: str) -> np.ndarray:
    """A mask PNG (1-bit, 8-bit or any other mode) as a uint8 array of 0/1: any non-zero pixel is foreground."""
    with _open(path, 'mask PNG') as im:
        try:
            if im.mode not in ('1', 'L'):
                im = im.convert('L')
            m = np.asarray(im)
        except (OSError, ValueError, SyntaxError) as e:
            raise DataError(f'{path}: mask PNG does not decode ({e})') from None
    return np.greater(m, 0).view(np.uint8)


def list_image_ids(folder: str) -> list[str]:
    """Image ids (file names without extension) of the images in ``folder``, sorted."""
    if not os.path.isdir(folder):
        raise DataError(f'{folder}: not a folder')
    return sorted(os.path.splitext(n)[0] for n in os.listdir(folder)
                  if n.lower().endswith(IMAGE_EXTENSIONS))
