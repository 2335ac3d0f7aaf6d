"""Bucket paths: the fsspec storage backend behind gs://, exercised on fsspec's in-memory filesystem."""
import os

import numpy as np
import pytest
from mmengine.fileio import get_file_backend, register_backend

import mmdet_ext  # noqa: F401
from mmdet_ext.fileio import FsspecBackend


class MemoryBackend(FsspecBackend):
    """Same mechanism as GCSBackend (a path prefix picks the backend), on fsspec's memory filesystem."""

    def __init__(self, **kw):
        super().__init__('memory', **kw)


register_backend('memory-test', MemoryBackend, force=True, prefixes=['memory'])


def upload(local_dir, remote_root):
    fs = MemoryBackend()
    for dirpath, _, files in os.walk(local_dir):
        for name in files:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, local_dir)
            with open(path, 'rb') as f:
                fs.put(f.read(), f'{remote_root}/{rel}')


def test_gs_prefix_selects_the_gcs_backend_with_a_clear_error_without_gcsfs():
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r'gs:// paths need the optional package gcsfs'):
            get_file_backend('gs://bucket/train/0001.jpg')
    else:
        assert type(get_file_backend('gs://bucket/x.jpg')).__name__ == 'GCSBackend'


def test_backend_file_operations():
    b = get_file_backend('memory://bucket/a')
    assert isinstance(b, MemoryBackend)
    b.put_text('hello', 'memory://bucket/dir/a.txt')
    assert b.get_text('memory://bucket/dir/a.txt') == 'hello'
    assert b.exists('memory://bucket/dir/a.txt') and b.isfile('memory://bucket/dir/a.txt')
    assert b.isdir('memory://bucket/dir') and not b.exists('memory://bucket/nope')
    assert b.join_path('memory://bucket/', 'dir', 'a.txt') == 'memory://bucket/dir/a.txt'
    assert sorted(b.list_dir_or_file('memory://bucket', recursive=True)) == ['dir', 'dir/a.txt']
    assert list(b.list_dir_or_file('memory://bucket', list_dir=False, recursive=True, suffix='.txt')) == ['dir/a.txt']
    with b.get_local_path('memory://bucket/dir/a.txt') as p:
        assert open(p).read() == 'hello'
    assert not os.path.exists(p)


def test_dataset_reads_annotations_and_images_from_a_bucket(synthetic_data):
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    register_all_modules()
    upload(str(synthetic_data / 'annotations'), 'memory://oid/annotations')
    upload(str(synthetic_data / 'train'), 'memory://oid/train')
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True, with_mask=True)]

    def build(root):
        return DATASETS.build(dict(type='OIDInstanceDataset', data_root=root, ann_file='annotations/leaf-train.pkl',
                                   data_prefix=dict(img=''), pipeline=pipeline, serialize_data=False))

    remote, local = build('memory://oid/'), build(f'{synthetic_data}/')
    assert len(remote) == len(local) > 0
    assert remote.get_data_info(0)['img_path'] == 'memory://oid/' + local.get_data_info(0)['img_path'][
        len(f'{synthetic_data}/'):]
    a, b = remote[0], local[0]
    assert np.array_equal(a['img'], b['img'])
    assert np.array_equal(a['gt_masks'].masks, b['gt_masks'].masks)
