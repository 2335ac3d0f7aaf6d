"""Mask codec: the one owner of the challenge's EncodedMask format (and of COCO RLE <-> binary mask).

The challenge encodes a binary mask of the ORIGINAL image size (H x W) as COCO compressed RLE (column-major,
as pycocotools makes it), then zlib (level 9), then base64 (ASCII). COCO RLE is a dict
``{'size': [H, W], 'counts': str}``; its compressed counts are already a compact string, so converting
between RLE and EncodedMask never touches a dense mask.

Decoding is strict, because pycocotools trusts its input: on an RLE whose runs do not add up to H x W its
``iou`` never returns and its ``decode`` returns uninitialised or missing pixels. So every EncodedMask read
anywhere goes through ``decode_encoded``: strict base64 (no characters outside the alphabet dropped),
complete zlib data with nothing after it, counts in pycocotools' alphabet and runs that cover exactly
H x W pixels (``rle_runs.run_totals``, on the compressed counts, compiled). Problems raise DataError; the batched
form prefixes the caller's place (file:line: image: detection k).

    encode_binary(mask) / encode_binary_batch(masks)   binary HxW (NxHxW) array -> RLE(s), str counts
    encode_region(crop, y0, x0, h, w)      the same for a mask given as its crop (cost of the crop only)
    decode_rle(rle)                        RLE -> binary HxW uint8 array
    rle_to_encoded(rle)                    RLE -> EncodedMask (str); the only encoder
    with_counts(s, rle)                    an EncodedMask read here, passed on keeping its counts
    encode_mask(mask)                      binary HxW array -> EncodedMask
    decode_encoded(s, h, w)                EncodedMask -> RLE with bytes counts (pycocotools' form), checked
    decode_encoded_batch(ss, h, w, where)  the same for one image's masks; errors name ``where``, detection k
    decode_runs_batch(ss, h, w, where)     the same checks, giving the masks' runs (``rle_runs.Runs``)
    check_encoded(ss, h, w)                -> (RLEs or None, [(k, problem)]): every problem, for validators
    check_rles(rles, h, w, where)          RLE dicts (mmdet's, results') -> bytes-counts RLEs, checked
    encoded_to_rle(s, h, w)                EncodedMask -> RLE with str counts, checked
    decode_mask(s, h, w)                   EncodedMask -> binary HxW uint8 array, checked
    run_totals(counts_list)                compressed counts -> pixels each covers (-1 where malformed)
                                           (``rle_runs``; re-exported here)
    rle_areas(rles)                        RLEs -> foreground pixels of each (batched)
    resize_nearest(mask, h, w)             binary array -> binary array of size h x w (nearest neighbour)
"""
from __future__ import annotations

import base64
import binascii
import zlib
from typing import Callable, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from .errors import DataError
from .rle_runs import Runs, run_totals, runs_of

Where = str | Callable[[int], str]


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


def encode_region(crop: np.ndarray, y0: int, x0: int, height: int, width: int) -> dict:
    """RLE (str counts) of a height x width mask that is ``crop`` at rows y0.., columns x0.. and empty
    elsewhere: the bytes ``encode_binary`` gives for the full mask, at the cost of the crop, not of the
    image (a pasted instance mask is a small part of a 1024 x 768 image)."""
    crop = np.asarray(crop, bool)
    h, w = crop.shape
    if h == 0 or w == 0 or not crop.any():
        counts = [height * width]
    else:
        padded = np.zeros((w, h + 2), np.int8)              # column-major, an empty pixel at both ends
        padded[:, 1:-1] = crop.T
        cols, rows = np.nonzero(np.diff(padded, axis=1))
        edges = (x0 + cols).astype(np.int64) * height + y0 + rows
        same = np.flatnonzero(edges[1:] == edges[:-1])      # a run across a column boundary: one run
        keep = np.ones(len(edges), bool)
        keep[same] = keep[same + 1] = False
        counts = np.diff(np.concatenate([[0], edges[keep], [height * width]])).tolist()
        if counts[-1] == 0:                                 # ends on a foreground pixel: no empty last run
            counts.pop()
    rle = mask_utils.frPyObjects({'size': [height, width], 'counts': counts}, height, width)
    return {'size': [height, width], 'counts': rle['counts'].decode('ascii')}


class EncodedMask(str):
    """An EncodedMask made in this process (``rle_to_encoded``): the string, which also keeps the counts
    it encodes, so that reading it back here (a search's fused masks, scored where they were made) skips
    base64 and zlib; the runs are still checked. Pickled, written or compared, it is the plain string."""

    def __new__(cls, text: str, counts: bytes):
        self = super().__new__(cls, text)
        self.counts = counts
        return self

    def __reduce__(self):
        return str, (str(self),)


def with_counts(encoded: str, rle: dict) -> str:
    """``encoded`` as an EncodedMask that keeps ``rle``'s counts, which must be what it decodes to (e.g.
    an input mask ``decode_encoded`` read, passed on unchanged by a fusion or an NMS): read again in this
    process, it skips base64 and zlib."""
    return EncodedMask(str(encoded), _as_coco(rle)['counts'])


def rle_to_encoded(rle: dict) -> str:
    """RLE (str, bytes or list counts) -> EncodedMask: zlib level 9, then base64."""
    counts = _as_coco(rle)['counts']
    return EncodedMask(base64.b64encode(zlib.compress(counts, 9)).decode('ascii'), counts)


def encode_mask(mask: np.ndarray) -> str:
    return rle_to_encoded(encode_binary(mask))


def to_coco(rles: list[dict]) -> list[dict]:
    """RLEs with str counts -> the bytes-counts form pycocotools' batch functions (iou, area) take."""
    return [_as_coco(r) for r in rles]


def _unpack(encoded) -> bytes:
    """EncodedMask -> the compressed RLE counts; a DataError says which layer is broken."""
    if type(encoded) is EncodedMask:
        return encoded.counts
    if not isinstance(encoded, str):
        raise DataError(f'EncodedMask is a {type(encoded).__name__}, not a string')
    if not encoded:
        raise DataError('EncodedMask is empty')
    try:
        packed = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise DataError('EncodedMask is not base64 (characters outside the alphabet or bad padding)') from None
    z = zlib.decompressobj()
    try:
        counts = z.decompress(packed)
    except zlib.error:
        raise DataError('EncodedMask is not zlib data') from None
    if not z.eof:
        raise DataError('EncodedMask holds truncated zlib data')
    if z.unused_data:
        raise DataError(f'EncodedMask has {len(z.unused_data)} bytes after its zlib data')
    return counts


def _check_size(height, width) -> tuple[int, int]:
    ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in (height, width))
    if not ok:
        raise DataError(f'image size {width}x{height} (WxH) is not two positive integers')
    return int(height), int(width)


def _total_problems(counts: Sequence[bytes], height: int, width: int) -> list[tuple[int, str]]:
    """(position, problem) for each counts string whose runs do not cover exactly height x width."""
    if not counts:
        return []
    return _coverage_problems(run_totals(counts), height, width)


def _coverage_problems(totals: np.ndarray, height: int, width: int) -> list[tuple[int, str]]:
    """(position, problem) for each run total (-1: malformed counts) that is not height x width."""
    bad = np.flatnonzero(totals != height * width)
    return [(int(k), 'mask is not a valid COCO RLE (malformed counts)' if totals[k] < 0 else
             f'mask is not {height}x{width} (its runs cover {totals[k]} pixels, expected {height * width})')
            for k in bad]


def check_encoded(encoded: Sequence[str], height: int, width: int
                  ) -> tuple[list[dict | None], list[tuple[int, str]]]:
    """Decode one image's EncodedMasks, collecting every problem instead of stopping at the first.
    Returns the RLEs (bytes counts; None where broken) and ``(position, problem)`` pairs. A string that
    occurs several times (a detection copied to its ancestors) is checked once."""
    height, width = _check_size(height, width)
    unique = list(dict.fromkeys(encoded))
    found: dict[str, dict | str] = {}                 # string -> its RLE, or its problem
    unpacked, good = [], []
    for s in unique:
        try:
            unpacked.append(_unpack(s))
            good.append(s)
        except DataError as e:
            found[s] = str(e)
    bad = dict(_total_problems(unpacked, height, width))
    for j, (s, counts) in enumerate(zip(good, unpacked)):
        found[s] = bad[j] if j in bad else {'size': [height, width], 'counts': counts}
    rles: list[dict | None] = []
    problems = []
    for k, s in enumerate(encoded):
        v = found[s]
        if isinstance(v, str):
            problems.append((k, v))
            rles.append(None)
        else:
            rles.append(v)
    return rles, problems


def _checked_size(height, width, where: Where) -> tuple[int, int]:
    """``_check_size`` for a batch: a bad image size names the place of its first mask."""
    try:
        return _check_size(height, width)
    except DataError as e:
        prefix = where(0) if callable(where) else where
        raise DataError(f'{prefix}: {e}' if prefix else str(e)) from None


def _place(where: Where, k: int) -> str:
    if callable(where):
        return where(k)
    return f'{where}: detection {k + 1}' if where else f'detection {k + 1}'


def decode_encoded_batch(encoded: Sequence[str], height: int, width: int, where: Where = '') -> list[dict]:
    """One image's EncodedMasks -> RLEs with bytes counts, all checked; the first problem raises
    DataError prefixed with ``where`` (a str gets ': detection k' appended; a callable maps k to the
    whole place)."""
    _checked_size(height, width, where)
    rles, problems = check_encoded(encoded, height, width)
    if problems:
        k, problem = problems[0]
        raise DataError(f'{_place(where, k)}: {problem}')
    return rles


def decode_runs_batch(encoded: Sequence[str], height: int, width: int, where: Where = '') -> Runs:
    """One image's EncodedMasks -> their foreground runs (``rle_runs.Runs``: areas, boxes, runs), checked
    as ``decode_encoded_batch`` checks them (same problems, same first error), in the one pass that reads
    the runs: the metric's path, which never needs the RLEs themselves."""
    height, width = _checked_size(height, width, where)
    counts, unpack_problem = [], None
    for k, s in enumerate(encoded):
        try:
            counts.append(_unpack(s))
        except DataError as e:
            unpack_problem = (k, str(e))
            break
    runs = runs_of(counts, height)
    problems = _coverage_problems(runs.totals, height, width)[:1] or ([unpack_problem] if unpack_problem else [])
    if problems:
        k, problem = problems[0]
        raise DataError(f'{_place(where, k)}: {problem}')
    return runs


def decode_encoded(encoded: str, height: int, width: int) -> dict:
    """One EncodedMask -> RLE with bytes counts, the form pycocotools' iou/merge/area take; checked."""
    height, width = _check_size(height, width)
    counts = _unpack(encoded)
    for _, problem in _total_problems([counts], height, width):
        raise DataError(problem)
    return {'size': [height, width], 'counts': counts}


def check_rles(rles, height: int, width: int, where: Where = '') -> list[dict]:
    """RLE dicts (str or bytes counts, e.g. mmdet's) -> bytes-counts RLEs of size height x width whose
    runs cover it exactly; the first problem raises DataError naming ``where`` and the detection."""
    height, width = _check_size(height, width)
    out = []
    for k, r in enumerate(rles):
        size = [int(v) for v in r['size']]
        if size != [height, width]:
            raise DataError(f'{_place(where, k)}: mask is {size[0]}x{size[1]}, the image is {height}x{width}')
        counts = r['counts']
        if isinstance(counts, str):
            if not counts.isascii():
                raise DataError(f'{_place(where, k)}: RLE counts are not ASCII')
            counts = counts.encode('ascii')
        elif not isinstance(counts, bytes):
            raise DataError(f'{_place(where, k)}: RLE counts must be compressed (str or bytes)')
        out.append({'size': size, 'counts': counts})
    problems = _total_problems([r['counts'] for r in out], height, width)
    if problems:
        k, problem = problems[0]
        raise DataError(f'{_place(where, k)}: {problem}')
    return out


def encoded_to_rle(encoded: str, height: int, width: int) -> dict:
    """EncodedMask -> RLE with str counts (the form of results files and mmdet), checked."""
    rle = decode_encoded(encoded, height, width)
    return {'size': rle['size'], 'counts': rle['counts'].decode('ascii')}


def decode_mask(encoded: str, height: int, width: int) -> np.ndarray:
    return mask_utils.decode(decode_encoded(encoded, height, width))


def resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D mask, pixel centres mapped as OpenCV's INTER_NEAREST does."""
    h0, w0 = mask.shape[:2]
    if (h0, w0) == (height, width):
        return mask
    rows = np.minimum((np.arange(height) * (h0 / height)).astype(np.int64), h0 - 1)
    cols = np.minimum((np.arange(width) * (w0 / width)).astype(np.int64), w0 - 1)
    return mask[rows[:, None], cols[None, :]]


def rle_areas(rles: list[dict]) -> np.ndarray:
    """Foreground pixels of each RLE. pycocotools' ``area`` overflows on batches of more than 255 masks
    (it sizes its output through a uint8 array under numpy 2), so it is called in chunks."""
    if not rles:
        return np.zeros(0, np.int64)
    coco = to_coco(rles)
    chunks = [mask_utils.area(coco[i:i + 255]) for i in range(0, len(coco), 255)]
    return np.concatenate(chunks).astype(np.int64)
