"""The run lengths of pycocotools' compressed RLE counts, at compiled speed: summed per string (the
strict check), or painted into a window of the image (a vote over a cluster's masks).

A strict reader must know that a mask's runs cover exactly H x W pixels before pycocotools touches it
(``mask_codec``). Parsing the counts is a loop over characters; numba compiles it once (cached beside
this file, or in the user's cache folder), which makes the check about 8x cheaper than numpy's passes
over the whole batch and leaves the strict decode costing little more than the lenient one did.
The format (pycocotools' rleToString): 5 bits per character from '0', 0x20 = more characters follow,
0x10 on a count's last character = negative; from the fourth count on, each is the difference to the
count two places before.

    run_totals(counts)                                         -> total pixels of each string (-1: broken)
    add_window(counts, height, y0, y1, x0, x1, weight, acc)    acc += weight where the mask is set
"""
from __future__ import annotations

import numba
import numpy as np

MAX_CHARS_PER_COUNT = 12        # 12 x 5 bits: more cannot be a run of a 32-bit RLE


@numba.njit(cache=True, nogil=True)
def _read_count(raw, i, end):  # pragma: no cover  (compiled; tested through its users)
    """One count of the string from raw[i] (before the delta to the count two places back):
    (value, index after it, well-formed)."""
    x = 0
    k = 0
    more = True
    while more:
        if i >= end or k >= MAX_CHARS_PER_COUNT:
            return 0, i, False
        c = np.int64(raw[i]) - 48
        if c < 0 or c > 63:
            return 0, i, False
        x |= (c & 0x1f) << (5 * k)
        more = (c & 0x20) != 0
        i += 1
        k += 1
        if not more and (c & 0x10) != 0:
            x |= -1 << (5 * k)
    return x, i, True


@numba.njit(cache=True, nogil=True)
def _totals(raw, ends, out):  # pragma: no cover  (compiled; tested through run_totals)
    start = 0
    for s in range(ends.shape[0]):
        end = ends[s]
        total = 0
        m = 0
        before1 = 0
        before2 = 0
        bad = False
        i = start
        while i < end:
            x, i, ok = _read_count(raw, i, end)
            if not ok:
                bad = True
                break
            if m > 2:
                x += before2
            if x < 0 or x > 0xFFFFFFFF:      # pycocotools would read these as huge unsigned runs
                bad = True
                break
            total += x
            before2 = before1
            before1 = x
            m += 1
        out[s] = -1 if bad else total
        start = end


def run_totals(counts: list[bytes]) -> np.ndarray:
    """Sum of the run lengths of each compressed counts string; -1 where the string is malformed
    (a character outside the alphabet, a count left unterminated or too long, a negative run)."""
    n = len(counts)
    ends = np.cumsum(np.fromiter(map(len, counts), np.int64, n))
    raw = np.frombuffer(b''.join(counts), np.uint8)
    out = np.zeros(n, np.int64)
    if n:
        _totals(raw, ends, out)
    return out


@numba.njit(cache=True, nogil=True)
def _add_window(raw, height, y0, y1, x0, x1, weight, acc):  # pragma: no cover  (tested via add_window)
    i = 0
    end = raw.shape[0]
    pos = 0
    m = 0
    before1 = 0
    before2 = 0
    while i < end:
        x, i, _ = _read_count(raw, i, end)         # checked strings only: always well-formed
        if m > 2:
            x += before2
        if m % 2 == 1 and x > 0:                    # odd runs are foreground: paint [pos, pos + x)
            last = pos + x - 1
            for col in range(max(pos // height, x0), min(last // height, x1 - 1) + 1):
                r0 = max(pos - col * height, y0)
                r1 = min(last - col * height + 1, height, y1)
                for r in range(r0, r1):
                    acc[r - y0, col - x0] += weight
        pos += x
        before2 = before1
        before1 = x
        m += 1


def add_window(counts: bytes, height: int, y0: int, y1: int, x0: int, x1: int, weight: float,
               acc: np.ndarray) -> None:
    """``acc`` (rows y0..y1-1, columns x0..x1-1 of the image) += ``weight`` at the mask's pixels, in place,
    without decoding the whole image. ``counts`` must be checked (``mask_codec``) already."""
    if isinstance(counts, str):
        counts = counts.encode('ascii')
    _add_window(np.frombuffer(counts, np.uint8), int(height), int(y0), int(y1), int(x0), int(x1),
                float(weight), acc)
