"""Annotation files: the one format between data preparation and the mmdet dataset.

The layout is mmengine's ``BaseDataset`` annotation format, so ``mmengine.load`` reads it too:

    {'metainfo': {'classes': [name, ...], 'mids': [mid, ...], 'subset': 'leaf'},
     'data_list': [{'img_id': '0a1b2c3d4e5f6789',
                    'img_path': '0a1b2c3d4e5f6789.jpg',      # relative to the images folder
                    'width': 1024, 'height': 768,
                    'instances': [{'bbox': [x1, y1, x2, y2],   # float pixels, x2/y2 exclusive
                                   'bbox_label': 3,            # 0-based index into metainfo classes
                                   'mask': {'size': [h, w], 'counts': '...'},  # COCO compressed RLE
                                   'ignore_flag': 0}]}]}

Optional federated fields (``util.data.federated``; written by ``util.data.build --bbox-csv / --labels-csv``,
absent in older files, which load unchanged and mean "every class verified everywhere"):

    item['verified_pos'] = [3, 17]    # class indices verified present (with ancestors, and annotated ones)
    item['verified_neg'] = [5]        # class indices verified absent (with descendants)
    instance without 'mask', 'ignore_flag': 1, 'group_of': 0 or 1   # a box-only box: an ignore region

Test shards use the same layout with empty ``instances``. The encoding is chosen by the extension:
``.pkl`` (pickle; the fast one, for training-scale files) or ``.json`` (readable, for small files).

    save_annotations(path, metainfo, data_list)   atomic write
    load_annotations(path)                        -> {'metainfo': ..., 'data_list': ...}
    make_metainfo(hierarchy, subset)              metainfo of a named class subset
    is_federated(item)                            whether an item carries the verified-class fields
"""
from __future__ import annotations

import gc
import json
import os
import pickle

from ..common.atomic import AtomicWriter
from ..common.errors import DataError

METAINFO_KEYS = ('classes', 'mids', 'subset')
PICKLE_EXTENSIONS = ('.pkl', '.pickle')
JSON_EXTENSIONS = ('.json',)
FEDERATED_KEYS = ('verified_pos', 'verified_neg')


def _encoding(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext in PICKLE_EXTENSIONS:
        return 'pickle'
    if ext in JSON_EXTENSIONS:
        return 'json'
    raise DataError(f'{path}: unknown annotation file extension {ext!r}; use .pkl or .json')


def _check_metainfo(metainfo, path: str) -> None:
    if not isinstance(metainfo, dict) or any(k not in metainfo for k in METAINFO_KEYS):
        raise DataError(f'{path}: metainfo must have the keys {", ".join(METAINFO_KEYS)}')
    if len(metainfo['classes']) != len(metainfo['mids']):
        raise DataError(f'{path}: metainfo has {len(metainfo["classes"])} classes '
                        f'but {len(metainfo["mids"])} mids')


def is_federated(item: dict) -> bool:
    """True when the item says which classes were verified (else all classes count as verified)."""
    return all(k in item for k in FEDERATED_KEYS)


def _check_federated(data_list, path: str) -> None:
    """Verified-class lists must be integer lists, and instances without a mask must be ignore regions:
    a masked-looking instance without a mask would otherwise crash the training pipeline much later."""
    for item in data_list:
        for key in FEDERATED_KEYS:
            if key in item and not all(isinstance(c, int) for c in item[key]):
                raise DataError(f'{path}: image {item.get("img_id")}: {key} must be a list of class indices')
        for inst in item.get('instances', ()):
            if 'mask' not in inst and not inst.get('ignore_flag', 0):
                raise DataError(f'{path}: image {item.get("img_id")}: an instance without a mask must have '
                                'ignore_flag 1 (a box-only ignore region)')


def make_metainfo(hierarchy, subset: str) -> dict:
    """Class names and MIDs of ``subset`` (hierarchy order): what ``bbox_label`` indexes."""
    mids = hierarchy.subset(subset)
    return {'classes': [hierarchy.name(m) for m in mids], 'mids': list(mids), 'subset': subset}


def save_annotations(path: str, metainfo: dict, data_list: list) -> None:
    """Write an annotation file; it appears under ``path`` only once complete."""
    encoding = _encoding(path)
    _check_metainfo(metainfo, path)
    doc = {'metainfo': dict(metainfo), 'data_list': data_list}
    if encoding == 'pickle':
        with AtomicWriter(path, 'wb') as f:
            pickle.dump(doc, f, protocol=pickle.HIGHEST_PROTOCOL)
    else:
        with AtomicWriter(path, 'w') as f:
            json.dump(doc, f, separators=(',', ':'))


def load_annotations(path: str) -> dict:
    """Read an annotation file (``.pkl`` or ``.json``) -> ``{'metainfo': ..., 'data_list': ...}``.

    The garbage collector is paused while the millions of small dicts of a training-scale file are
    created: its repeated passes over them would otherwise cost more than the parsing.
    """
    encoding = _encoding(path)
    if not os.path.isfile(path):
        raise DataError(f'{path}: annotation file not found')
    enabled = gc.isenabled()
    gc.disable()
    try:
        if encoding == 'pickle':
            with open(path, 'rb') as f:
                doc = pickle.load(f)
        else:
            with open(path, encoding='utf-8') as f:
                doc = json.load(f)
    except (pickle.UnpicklingError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f'{path}: not a valid {encoding} annotation file ({e})') from None
    finally:
        if enabled:
            gc.enable()
    if not isinstance(doc, dict) or not isinstance(doc.get('data_list'), list):
        raise DataError(f'{path}: expected a dict with "metainfo" and a "data_list" list')
    _check_metainfo(doc.get('metainfo'), path)
    _check_federated(doc['data_list'], path)
    return doc
