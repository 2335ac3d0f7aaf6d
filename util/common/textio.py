"""Opening the project's text inputs (CSVs, id lists) so that a wrong file is one clear error.

Google's files and ours are UTF-8; Excel adds a byte-order mark, which is accepted and dropped. A gzip
file named ``.csv`` or bytes in another encoding (latin-1) would otherwise surface as a
UnicodeDecodeError traceback in the middle of a run: here they are a DataError naming the file (and the
line and byte of the first bad one), raised at open time for gzip and on reading for the rest.

    open_text(path)   -> text file object (UTF-8, BOM dropped, newline='' as the csv module wants)
"""
from __future__ import annotations

import codecs
import io

from .errors import DataError

GZIP_MAGIC = b'\x1f\x8b'


def _not_text(where: str, detail: str) -> DataError:
    return DataError(f'{where}: not UTF-8 text ({detail}): is it compressed?')


def _first_bad_byte(path: str) -> tuple[int, str]:
    """(line, 'byte B is 0xNN') of the first byte that is not UTF-8; only run once decoding has failed, as
    the text layer decodes ahead in chunks and cannot say where."""
    decoder = codecs.getincrementaldecoder('utf-8')()
    offset, line = 0, 1
    with open(path, 'rb') as f:
        while chunk := f.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                at = max(e.start, 0)
                return line + chunk.count(b'\n', 0, at), f'byte {offset + at} is 0x{chunk[at]:02x}'
            offset += len(chunk)
            line += chunk.count(b'\n')
    return line, 'the file ends inside a character'


class _StrictText(io.TextIOWrapper):
    """A TextIOWrapper whose decoding errors become one DataError naming the file, line and byte."""

    def __init__(self, raw, path: str):
        super().__init__(raw, encoding='utf-8-sig', errors='strict', newline='')
        self._path = path

    def _fail(self) -> DataError:
        line, detail = _first_bad_byte(self._path)
        return _not_text(f'{self._path}:{line}', detail)

    def __next__(self) -> str:
        try:
            return super().__next__()
        except UnicodeDecodeError:
            raise self._fail() from None

    def readline(self, size: int = -1) -> str:
        try:
            return super().readline(size)
        except UnicodeDecodeError:
            raise self._fail() from None

    def read(self, size: int | None = -1) -> str:
        try:
            return super().read(size)
        except UnicodeDecodeError:
            raise self._fail() from None


def open_text(path: str) -> io.TextIOWrapper:
    """Open ``path`` for reading as UTF-8 text; gzip data or undecodable bytes raise DataError."""
    raw = open(path, 'rb')
    try:
        if raw.peek(2)[:2] == GZIP_MAGIC:
            raise _not_text(path, 'gzip data')
        return _StrictText(raw, str(path))
    except BaseException:
        raw.close()
        raise
