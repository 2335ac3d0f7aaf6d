"""Read images, masks and annotation files straight from a bucket (``gs://...``), as the reference did.

mmengine has no ``gs://`` backend. ``FsspecBackend`` is a small mmengine storage backend over any fsspec
filesystem; it is registered for the ``gs`` prefix, where fsspec uses the optional ``gcsfs`` package
(``pip install gcsfs``; credentials as gcsfs finds them). Paths starting with ``gs://`` then work wherever
mmengine reads files (``LoadImageFromFile``, checkpoints, ``mmengine.fileio.get``), with no config change;
``backend_args=dict(backend='fsspec', protocol=...)`` selects another fsspec filesystem explicitly.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from typing import Generator, Iterator

import fsspec
from mmengine.fileio import BaseStorageBackend, register_backend

PROTOCOL_PACKAGES = {'gs': 'gcsfs', 'gcs': 'gcsfs', 's3': 's3fs'}


class FsspecBackend(BaseStorageBackend):
    """mmengine storage backend over ``fsspec.filesystem(protocol, **fs_kwargs)``."""

    def __init__(self, protocol: str = 'gs', **fs_kwargs):
        try:
            self._fs = fsspec.filesystem(protocol, **fs_kwargs)
        except ImportError as e:
            package = PROTOCOL_PACKAGES.get(protocol, 'the fsspec implementation')
            raise ImportError(f'{protocol}:// paths need the optional package {package} '
                              f'(pip install {package}): {e}') from None
        self.protocol = protocol

    def get(self, filepath) -> bytes:
        with self._fs.open(str(filepath), 'rb') as f:
            return f.read()

    def get_text(self, filepath, encoding: str = 'utf-8') -> str:
        return self.get(filepath).decode(encoding)

    def put(self, obj: bytes, filepath) -> None:
        with self._fs.open(str(filepath), 'wb') as f:
            f.write(obj)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        self.put(obj.encode(encoding), filepath)

    def exists(self, filepath) -> bool:
        return self._fs.exists(str(filepath))

    def isdir(self, filepath) -> bool:
        return self._fs.isdir(str(filepath))

    def isfile(self, filepath) -> bool:
        return self._fs.isfile(str(filepath))

    def join_path(self, filepath, *filepaths) -> str:
        return '/'.join([str(filepath).rstrip('/')] + [str(p).strip('/') for p in filepaths])

    @contextmanager
    def get_local_path(self, filepath) -> Generator[str, None, None]:
        """Download to a temporary file (kept until the block ends): for readers that need a path."""
        suffix = os.path.splitext(str(filepath))[1]
        with tempfile.NamedTemporaryFile(suffix=suffix, delete=False) as f:
            f.write(self.get(filepath))
        try:
            yield f.name
        finally:
            os.unlink(f.name)

    def list_dir_or_file(self, dir_path, list_dir=True, list_file=True, suffix=None,
                         recursive=False) -> Iterator[str]:
        root = str(dir_path).rstrip('/')
        entries = self._fs.find(root, withdirs=True, detail=True) if recursive else \
            {e['name']: e for e in self._fs.ls(root, detail=True)}
        strip = self._fs._strip_protocol(root).rstrip('/') + '/'
        for name, info in sorted(entries.items()):
            if name.rstrip('/') == strip.rstrip('/'):
                continue
            rel = name[len(strip):] if name.startswith(strip) else name
            is_dir = info.get('type') == 'directory'
            if (is_dir and list_dir) or (not is_dir and list_file and (suffix is None or rel.endswith(suffix))):
                yield rel


class GCSBackend(FsspecBackend):
    """Google Cloud Storage (``gs://bucket/path``) through gcsfs."""

    def __init__(self, **fs_kwargs):
        super().__init__('gs', **fs_kwargs)


register_backend('fsspec', FsspecBackend, force=True)
register_backend('gcs', GCSBackend, force=True, prefixes=['gs'])
