"""Raw detection results of one test shard: what the ensemble tester writes and post-processing reads.

A results file is JSON lines, one image per line, after one header line that names the classes:

    {"format": "oid-results", "version": 1, "classes": ["/m/...", ...]}
    {"image_id": "0a1b...", "width": 1024, "height": 768, "labels": [3, 17], "scores": [0.91, 0.4],
     "counts": ["<COCO compressed RLE counts>", "..."]}

``labels`` index ``classes``; every mask is a COCO RLE of the ORIGINAL image size, so only its ``counts``
string is stored (its size is always ``[height, width]``). A name ending in ``.gz`` is gzip (mtime 0, no
file name in the header), otherwise plain text; readers detect gzip by its magic bytes. Keys are written
in a fixed order with compact separators, so the same detections always give the same bytes.

Writing goes to ``path + '.partial'``, plain JSON lines flushed after every image, so a killed process
(even SIGKILL) loses only the image in flight; a clean close renames it to ``path``, or for ``.gz``
compresses it there in one stream (the same bytes as compressing the lines as they come). Opening it
again with ``resume=True`` keeps every complete line (a torn last line is dropped), reports the images
already done in ``done_ids`` and appends after them. A damaged gzip file is reported as such, with the
compressed byte where the damage shows.

    ResultsWriter(path, classes, resume=False)   context manager: .write(...), .done_ids, .close()
    iter_results(path)                           -> ResultRecord per image, streaming
    read_classes(path)                           -> the class list (MIDs) of the header
    gzip_damage(path)                            -> (byte, reason) where a gzip file is damaged, or None
"""
from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import zlib
from typing import IO, Iterator, NamedTuple, Sequence

from ..common.errors import DataError

FORMAT = 'oid-results'
VERSION = 1
GZIP_MAGIC = b'\x1f\x8b'


class ResultsError(DataError):
    """A malformed or inconsistent results file or record; the message names file:line or the image."""


class ResultRecord(NamedTuple):
    image_id: str
    width: int
    height: int
    labels: list[int]           # indices into the file's classes
    scores: list[float]
    rles: list[dict]            # {'size': [height, width], 'counts': str}


def _dumps(obj) -> bytes:
    return (json.dumps(obj, separators=(',', ':'), ensure_ascii=True, allow_nan=False) + '\n').encode()


def _header(classes: Sequence[str]) -> bytes:
    return _dumps({'format': FORMAT, 'version': VERSION, 'classes': list(classes)})


def _open_read(path: str) -> IO[bytes]:
    f = open(path, 'rb')
    if f.read(2) == GZIP_MAGIC:
        f.seek(0)
        return gzip.GzipFile(fileobj=f, mode='rb')
    f.seek(0)
    return f


def _open_write(f: IO[bytes]) -> IO[bytes]:
    return gzip.GzipFile(filename='', fileobj=f, mode='wb', compresslevel=6, mtime=0)


def gzip_damage(path: str, chunk_size: int = 1 << 16) -> tuple[int, str] | None:
    """``(byte offset, zlib's reason)`` of the first place where ``path`` stops being valid gzip, or None.

    zlib checks the header, the deflate data, the CRC and the length; the failing chunk is replayed byte
    by byte so the offset is the byte at which zlib notices (a flip is noticed at or after its position,
    at the latest at the checksum in the trailer). The end of the file inside a stream is 'truncated'.
    """
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    offset = 0
    with open(path, 'rb') as f:
        while chunk := f.read(chunk_size):
            saved = d.copy()
            try:
                d.decompress(chunk)
            except zlib.error:
                for i in range(len(chunk)):
                    try:
                        saved.decompress(chunk[i:i + 1])
                    except zlib.error as e:
                        return offset + i, str(e).replace('Error -3 while decompressing data: ', '')
                return offset + len(chunk) - 1, 'invalid data'
            offset += len(chunk)
            while d.eof and d.unused_data:              # a further gzip member
                rest = d.unused_data
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                try:
                    d.decompress(rest)
                except zlib.error as e:
                    return offset - len(rest), str(e).replace('Error -3 while decompressing data: ', '')
    if not d.eof:
        return offset, 'truncated: the file ends inside the compressed stream'
    return None


def _looks_gzip(path: str) -> bool:
    """Named .gz or one of the two magic bytes intact: worth checking as gzip when reading fails."""
    with open(path, 'rb') as f:
        head = f.read(2)
    return path.endswith('.gz') or head[:1] == GZIP_MAGIC[:1] or head[1:2] == GZIP_MAGIC[1:]


def _blame_gzip(path: str, error: ResultsError) -> ResultsError:
    """A reading error of a damaged gzip file becomes 'corrupt gzip at byte N'; otherwise ``error``."""
    if not _looks_gzip(path):
        return error
    damage = gzip_damage(path)
    if damage is None:
        return error
    at, reason = damage
    what = 'truncated gzip' if reason.startswith('truncated') else 'corrupt gzip'
    return ResultsError(f'{path}: {what} at byte {at} of {os.path.getsize(path)} ({reason}); '
                        'the file is damaged: write it again')


def _parse_header(line: bytes, path: str) -> list[str]:
    try:
        head = json.loads(line)
        if head.get('format') != FORMAT:
            raise ValueError
    except (ValueError, AttributeError):
        raise ResultsError(f'{path}:1: not a results file (header {line[:80]!r})') from None
    if head.get('version') != VERSION:
        raise ResultsError(f'{path}:1: results format version {head.get("version")}, '
                           f'this code reads {VERSION}')
    classes = head.get('classes')
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ResultsError(f'{path}:1: header has no list of classes')
    return classes


def _lines(f: IO[bytes], path: str, tolerate_torn: bool) -> Iterator[tuple[int, bytes]]:
    """Numbered lines; a truncated gzip stream or an unterminated last line ends the file early when
    ``tolerate_torn`` (a crashed writer), and is an error otherwise."""
    number = 0
    while True:
        try:
            line = f.readline()
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            if tolerate_torn:
                return
            raise _blame_gzip(path, ResultsError(
                f'{path}:{number + 1}: truncated or corrupt compressed data ({e})')) from None
        if not line:
            return
        number += 1
        if not line.endswith(b'\n'):
            if tolerate_torn:
                return
            raise ResultsError(f'{path}:{number}: last line is incomplete (file truncated?)')
        yield number, line


def _record(line: bytes, path: str, number: int, n_classes: int) -> ResultRecord:
    where = f'{path}:{number}'
    try:
        d = json.loads(line)
        image_id, width, height = d['image_id'], d['width'], d['height']
        labels, scores, counts = d['labels'], d['scores'], d['counts']
    except (ValueError, KeyError, TypeError) as e:
        raise ResultsError(f'{where}: not a results record ({type(e).__name__}: {e})') from None
    if not (isinstance(image_id, str) and type(width) is int and type(height) is int):
        raise ResultsError(f'{where}: image_id must be a string, width and height integers')
    if width <= 0 or height <= 0:
        raise ResultsError(f'{where}: image {image_id}: size {width}x{height}, expected positive integers')
    if not (type(labels) is list and type(scores) is list and type(counts) is list):
        raise ResultsError(f'{where}: image {image_id}: labels, scores and counts must be lists')
    if not (len(labels) == len(scores) == len(counts)):
        raise ResultsError(f'{where}: image {image_id}: {len(labels)} labels, {len(scores)} scores, '
                           f'{len(counts)} masks')
    if labels and not all(type(v) is int and 0 <= v < n_classes for v in labels):
        raise ResultsError(f'{where}: image {image_id}: label index outside 0..{n_classes - 1}')
    if not all(type(v) in (int, float) and math.isfinite(v) for v in scores):
        raise ResultsError(f'{where}: image {image_id}: a score is not a finite number')
    if not all(type(c) is str for c in counts):
        raise ResultsError(f'{where}: image {image_id}: a mask\'s counts is not a string')
    size = [height, width]
    return ResultRecord(image_id, width, height, labels, scores,
                        [{'size': size, 'counts': c} for c in counts])


def read_classes(path: str) -> list[str]:
    try:
        with _open_read(path) as f:
            for _, line in _lines(f, path, tolerate_torn=False):
                return _parse_header(line, path)
        raise ResultsError(f'{path}:1: empty file, expected a results header')
    except ResultsError as e:
        raise _blame_gzip(path, e) from None


def iter_results(path: str) -> Iterator[ResultRecord]:
    """Yield one ResultRecord per image, in file order, holding one line in memory at a time.

    Any error of a gzip file that turns out to be damaged is reported as the damage (byte offset)."""
    try:
        yield from _iter_records(path)
    except ResultsError as e:
        raise _blame_gzip(path, e) from None


def _iter_records(path: str) -> Iterator[ResultRecord]:
    with _open_read(path) as f:
        lines = _lines(f, path, tolerate_torn=False)
        first = next(lines, None)
        if first is None:
            raise ResultsError(f'{path}:1: empty file, expected a results header')
        n_classes = len(_parse_header(first[1], path))
        for number, line in lines:
            yield _record(line, path, number, n_classes)


class ResultsWriter:
    """Append one image at a time to ``path + '.partial'``; ``close()`` finishes ``path``.

    The partial file is always plain JSON lines, flushed to the operating system after the header and
    after every image: a killed process keeps every finished image. With ``resume=True`` an existing
    ``.partial`` (plain, or gzip from an older writer) or a finished ``path`` is kept: its complete lines
    stay, ``done_ids`` lists their images, and new images are appended. The classes must be the same.
    ``done_ids`` also grows with every ``write`` (an image written twice is an error).
    """

    def __init__(self, path: str, classes: Sequence[str], resume: bool = False):
        self.path = os.fspath(path)
        self.partial = self.path + '.partial'
        self.classes = list(classes)
        self.done_ids: set[str] = set()
        self._gz = self.path.endswith('.gz')
        self._closed = False
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        if resume and not os.path.exists(self.partial) and os.path.exists(self.path):
            if read_classes(self.path) != self.classes:
                raise ResultsError(f'{self.path}:1: written for other classes')
            os.replace(self.path, self.partial)     # finished earlier: reopen it, nothing left to add
        if resume and os.path.exists(self.partial):
            self._f = self._reopen()
        else:
            self._f = self._fresh()

    def _fresh(self) -> IO[bytes]:
        f = open(self.partial, 'wb')
        f.write(_header(self.classes))
        f.flush()
        return f

    def _reopen(self) -> IO[bytes]:
        """Keep the complete lines of the partial file: plain text is truncated after the last one; a gzip
        partial (a finished file reopened, or an older writer's) is rewritten as plain lines."""
        with _open_read(self.partial) as f:
            compressed = isinstance(f, gzip.GzipFile)
            lines = _lines(f, self.partial, tolerate_torn=True)
            first = next(lines, None)
            if first is None:                       # not even a complete header: start afresh
                return self._fresh()
            if _parse_header(first[1], self.partial) != self.classes:
                raise ResultsError(f'{self.partial}:1: written for other classes; delete it or '
                                   'resume with the same class list')
            if compressed:
                tmp = self.partial + '.tmp'
                try:
                    with open(tmp, 'wb') as out:
                        out.write(first[1])
                        for _, line in self._complete(lines):
                            out.write(line)
                except BaseException:
                    os.unlink(tmp)
                    raise
                os.replace(tmp, self.partial)
                return open(self.partial, 'ab')
            end = len(first[1])
            for _, line in self._complete(lines):
                end += len(line)
        raw = open(self.partial, 'r+b')
        raw.truncate(end)
        raw.seek(end)
        return raw

    def _complete(self, lines):
        """Complete, parseable lines; an unparseable line is dropped only when it is the last one."""
        pending = None
        for number, line in lines:
            if pending is not None:
                raise ResultsError(f'{self.partial}:{pending}: corrupt line in the middle of the file')
            try:
                image_id = json.loads(line)['image_id']
            except (ValueError, KeyError, TypeError):
                pending = number
                continue
            self.done_ids.add(image_id)
            yield number, line

    def write(self, image_id: str, width: int, height: int, labels, scores, rles) -> None:
        """Append one image and flush it. Masks must be RLEs of the original size ``[height, width]``."""
        image_id, width, height = str(image_id), int(width), int(height)
        if image_id in self.done_ids:
            raise ResultsError(f'{self.partial}: image {image_id} written twice')
        labels = [int(v) for v in labels]
        scores = [float(v) for v in scores]
        if not (len(labels) == len(scores) == len(rles)):
            raise ResultsError(f'image {image_id}: {len(labels)} labels, {len(scores)} scores, '
                               f'{len(rles)} masks')
        if labels and not (0 <= min(labels) and max(labels) < len(self.classes)):
            raise ResultsError(f'image {image_id}: label index outside 0..{len(self.classes) - 1}')
        if not all(math.isfinite(s) for s in scores):
            raise ResultsError(f'image {image_id}: non-finite score')
        counts = []
        for rle in rles:
            if [int(v) for v in rle['size']] != [height, width]:
                raise ResultsError(f'image {image_id}: mask of size {list(rle["size"])}, expected the '
                                   f'original image size [{height}, {width}]')
            c = rle['counts']
            counts.append(c.decode('ascii') if isinstance(c, bytes) else c)
        self._f.write(_dumps({'image_id': image_id, 'width': width, 'height': height,
                              'labels': labels, 'scores': scores, 'counts': counts}))
        self._f.flush()
        self.done_ids.add(image_id)

    def close(self) -> None:
        """Finish the file: plain text is renamed to ``path``; gzip is compressed into ``path + '.tmp'``,
        renamed to ``path``, and only then is the partial file removed."""
        if self._closed:
            return
        self._closed = True
        self._f.close()
        if not self._gz:
            os.replace(self.partial, self.path)
            return
        tmp = self.path + '.tmp'
        try:
            with open(self.partial, 'rb') as src, open(tmp, 'wb') as raw, _open_write(raw) as out:
                shutil.copyfileobj(src, out, 1 << 20)
        except BaseException:
            os.unlink(tmp)
            raise
        os.replace(tmp, self.path)
        os.unlink(self.partial)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        elif not self._closed:
            self._closed = True
            self._f.close()                         # keep what was written: the run can resume
        return False


def main(argv=None) -> None:
    """Summarise a results file: classes, images, detections."""
    import argparse

    from ..common.cli import add_progress_flag, progress
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument('results', nargs='+')
    add_progress_flag(parser)
    args = parser.parse_args(argv)
    for path in args.results:
        classes = read_classes(path)
        images = dets = 0
        for rec in progress(iter_results(path), args.progress, desc=os.path.basename(path), unit='img'):
            images += 1
            dets += len(rec.labels)
        print(f'{path}: {len(classes)} classes, {images} images, {dets} detections')


if __name__ == '__main__':
    import sys

    from ..common.cli import run
    sys.exit(run(main))
