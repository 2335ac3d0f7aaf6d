"""Mask codec: the challenge's EncodedMask <-> COCO RLE <-> binary mask.

The challenge encodes a binary mask of the ORIGINAL image size (H x W) as COCO compressed RLE (column-major,
as pycocotools makes it), then zlib (level 9), then base64 (ASCII). COCO RLE is a dict
``{'size': [H, W], 'counts': str}``; its compressed counts are already a compact string, so converting
between RLE and EncodedMask never touches a dense mask.

    encode_binary(mask)          binary HxW array   -> RLE (counts as str)
    decode_rle(rle)              RLE                -> binary HxW uint8 array
    rle_to_encoded(rle)          RLE                -> EncodedMask (str)
    encoded_to_rle(s, h, w)      EncodedMask        -> RLE
    encode_mask(mask)            binary HxW array   -> EncodedMask
    decode_mask(s, h, w)         EncodedMask        -> binary HxW uint8 array
    resize_nearest(mask, h, w)   binary array       -> binary array of size h x w (nearest neighbour)
    encoded_to_coco(s, h, w)     EncodedMask        -> RLE with bytes counts, ready for pycocotools
    run_totals(counts_list)      compressed counts  -> pixels each RLE covers (H*W if well formed)
    rle_areas(rles)              RLEs               -> foreground pixels of each (batched)
"""
from __future__ import annotations

import base64
import zlib

import numpy as np
from pycocotools import mask as mask_utils


def encode_binary(mask: np.ndarray) -> dict:
    """Binary HxW mask -> COCO compressed RLE with ``counts`` as str (what mmdet and JSON need)."""
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {'size': [int(rle['size'][0]), int(rle['size'][1])], 'counts': rle['counts'].decode('ascii')}


def encode_binary_batch(masks: np.ndarray) -> list[dict]:
    """N x H x W binary masks -> N RLEs (one pycocotools call)."""
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(np.moveaxis(masks.astype(np.uint8), 0, -1)))
    return [{'size': [int(r['size'][0]), int(r['size'][1])], 'counts': r['counts'].decode('ascii')}
            for r in rles]


def _as_coco(rle: dict) -> dict:
    counts = rle['counts']
    if isinstance(counts, str):
        counts = counts.encode('ascii')
    elif isinstance(counts, list):  # uncompressed RLE
        return mask_utils.frPyObjects(rle, *rle['size'])
    return {'size': list(rle['size']), 'counts': counts}


def decode_rle(rle: dict) -> np.ndarray:
    return mask_utils.decode(_as_coco(rle))


def rle_area(rle: dict) -> int:
    return int(mask_utils.area(_as_coco(rle)))


def rle_to_encoded(rle: dict) -> str:
    counts = _as_coco(rle)['counts']
    return base64.b64encode(zlib.compress(counts, 9)).decode('ascii')


def encoded_to_rle(encoded: str, height: int, width: int) -> dict:
    counts = zlib.decompress(base64.b64decode(encoded))
    return {'size': [int(height), int(width)], 'counts': counts.decode('ascii')}


def encode_mask(mask: np.ndarray) -> str:
    return rle_to_encoded(encode_binary(mask))


def decode_mask(encoded: str, height: int, width: int) -> np.ndarray:
    return decode_rle(encoded_to_rle(encoded, height, width))


def to_coco(rles: list[dict]) -> list[dict]:
    """RLEs with str counts -> the bytes-counts form pycocotools' batch functions (iou, area) take."""
    return [_as_coco(r) for r in rles]


def resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D mask, pixel centres mapped as OpenCV's INTER_NEAREST does."""
    h0, w0 = mask.shape[:2]
    if (h0, w0) == (height, width):
        return mask
    rows = np.minimum((np.arange(height) * (h0 / height)).astype(np.int64), h0 - 1)
    cols = np.minimum((np.arange(width) * (w0 / width)).astype(np.int64), w0 - 1)
    return mask[rows[:, None], cols[None, :]]


def encoded_to_coco(encoded: str, height: int, width: int) -> dict:
    """EncodedMask -> RLE with bytes counts, the form pycocotools' iou/merge/area take without copying."""
    return {'size': [int(height), int(width)], 'counts': zlib.decompress(base64.b64decode(encoded))}


def run_totals(counts: list[bytes]) -> np.ndarray:
    """Sum of the run lengths of each compressed RLE counts string; -1 where the string is malformed.

    A mask of an H x W image must sum to exactly H*W. pycocotools' decode does not check this (with a
    size too large it returns uninitialised pixels), so a validator needs it; decoding every mask densely
    to find out would cost H*W bytes per mask. Vectorised over the whole batch (no per-character loop):
    pycocotools' rleToString format (5 bits per character, 0x20 = more characters follow, 0x10 = sign of
    the last one; from the fourth count on, the difference to the count two places before) is undone
    with a few passes over the counts and cumulative sums.
    """
    n = len(counts)
    lens = np.fromiter(map(len, counts), np.int64, n)
    totals = np.zeros(n, np.int64)
    raw = np.frombuffer(b''.join(counts), np.uint8)
    if raw.size == 0:
        return totals
    ends = np.cumsum(lens)
    nonempty = lens > 0
    bad = np.zeros(n, bool)
    outside = np.flatnonzero((raw < 48) | (raw > 111))          # not in pycocotools' alphabet
    bad[np.searchsorted(ends, outside, side='right')] = True
    chars = raw - np.uint8(48)
    more = (chars & 0x20) != 0
    bad[nonempty] |= more[ends[nonempty] - 1]                   # last count left unterminated

    # Counts: a count starts after a character without the continuation bit, and at every string start.
    first = np.ones(chars.size, bool)
    first[1:] = ~more[:-1]
    first[(ends - lens)[nonempty]] = True
    starts = np.flatnonzero(first)
    length = np.diff(np.append(starts, chars.size))
    if length.max() > 12:                                       # would not fit in 64 bits
        bad[np.searchsorted(ends, starts[length > 12], side='right')] = True
        length = np.minimum(length, 12)
    x = (chars[starts] & 0x1f).astype(np.int64)
    for j in range(1, int(length.max())):
        longer = np.flatnonzero(length > j)
        x[longer] |= (chars[starts[longer] + j] & 0x1f).astype(np.int64) << (5 * j)
    negative = (chars[starts + length - 1] & 0x10) != 0
    x[negative] -= np.int64(1) << (5 * length[negative])

    # From the fourth count on, a count is stored as the difference to the count two places before: the
    # runs are prefix sums along the odd counts and along the even counts from the third one on.
    per_string = np.bincount(np.searchsorted(ends, starts, side='right'), minlength=n)
    string_first = np.cumsum(per_string) - per_string           # index of each string's first count
    m = np.arange(len(x)) - np.repeat(string_first, per_string)
    runs = x.copy()
    for chain in (m % 2 == 1, (m % 2 == 0) & (m >= 2)):
        csum = np.cumsum(np.where(chain, x, 0))
        base = np.where(string_first > 0, csum[string_first - 1], 0)
        runs = np.where(chain, csum - np.repeat(base, per_string), runs)
    has = per_string > 0
    totals[has] = np.add.reduceat(runs, string_first[has])
    invalid = (runs < 0) | (runs > 0xFFFFFFFF)                  # pycocotools stores uint32 runs
    bad[np.repeat(np.arange(n), per_string)[invalid]] = True
    totals[bad] = -1
    return totals


def rle_areas(rles: list[dict]) -> np.ndarray:
    """Foreground pixels of each RLE. pycocotools' ``area`` overflows on batches of more than 255 masks
    (it sizes its output through a uint8 array under numpy 2), so it is called in chunks."""
    if not rles:
        return np.zeros(0, np.int64)
    coco = to_coco(rles)
    chunks = [mask_utils.area(coco[i:i + 255]) for i in range(0, len(coco), 255)]
    return np.concatenate(chunks).astype(np.int64)
