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
    the LEB128-like format of pycocotools' rleToString is undone with cumulative sums.
    """
    n = len(counts)
    lens = np.fromiter(map(len, counts), np.int64, n)
    chars = np.frombuffer(b''.join(counts), np.uint8).astype(np.int64) - 48
    if chars.size == 0:
        return np.zeros(n, np.int64)
    sid = np.repeat(np.arange(n), lens)                       # string of each character
    bad = np.zeros(n, bool)
    bad[sid[(chars < 0) | (chars > 63)]] = True               # outside pycocotools' alphabet
    ends = np.cumsum(lens)
    nonempty = lens > 0
    bad[nonempty] |= (chars[ends[nonempty] - 1] & 0x20) != 0  # last count left unterminated

    # A count is a run of characters, each adding 5 bits, up to one without the continuation bit 0x20.
    starts_flag = np.ones(chars.size, bool)
    starts_flag[1:] = (chars[:-1] & 0x20) == 0
    starts_flag[(ends - lens)[nonempty]] = True               # a count never spans two strings
    starts = np.flatnonzero(starts_flag)
    cid = np.cumsum(starts_flag) - 1
    k = np.arange(chars.size) - starts[cid]                   # position of the character in its count
    bad[sid[k > 11]] = True                                   # would not fit in 64 bits
    k = np.minimum(k, 11)
    x = np.add.reduceat((chars & 0x1f) << (5 * k), starts)
    last = np.r_[starts[1:], chars.size] - 1
    negative = (chars[last] & 0x10) != 0                      # sign bit of the last character
    x = np.where(negative, x - (np.int64(1) << (5 * (k[last] + 1))), x)

    # Counts after the third are stored as differences to the count two places before.
    csid = sid[starts]
    m = np.arange(len(starts)) - np.searchsorted(csid, csid)  # index of the count in its string
    chain = csid * 3 + np.where(m == 0, 0, np.where(m % 2, 1, 2))
    order = np.argsort(chain, kind='stable')
    xs, keys = x[order], chain[order]
    csum = np.cumsum(xs)
    first = np.ones(len(keys), bool)
    first[1:] = keys[1:] != keys[:-1]
    base = (csum - xs)[first][np.cumsum(first) - 1]
    runs = csum - base
    bad[csid[order][(runs < 0) | (runs > 0xFFFFFFFF)]] = True  # pycocotools stores uint32 runs
    totals = np.zeros(n, np.int64)
    np.add.at(totals, csid[order], runs)
    totals[bad] = -1
    return totals
