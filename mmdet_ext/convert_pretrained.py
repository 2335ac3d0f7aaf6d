"""A trained mmdetection checkpoint -> a checkpoint for another class list: COCO -> Open Images, or a
model of classes A -> an expert for a subset B of A.

COCO -> Open Images: the reference dropped the class-specific head layers and let them start from scratch.
We do the same for classes without a COCO counterpart, and copy the rows of those that have one
(``data/coco-to-oid-classes.csv``: person, car, dog, ...) into the new heads, so they start trained. Class-specific tensors are recognised by
their first dimension: ``fc_cls`` (COCO classes + background), class-specific ``fc_reg`` (4 per class) and
the mask heads' ``conv_logits`` (one channel per class). New rows are initialised as mmdetection initialises
those layers (normal 0.01 / 0.001, Kaiming for mask logits), from a fixed seed.

Classes A -> subset B (``subset_mapping``): every class of B has its row in A, so the class-specific rows of
B are selected (plus the background row) in every cascade stage and mask head, and the expert starts as
exactly the full model restricted to B: its per-class scores before the softmax, boxes and masks of B's
classes are the full model's. Class branches without a background row (the federated loss's ``fc_cls``,
RTMDet's ``rtm_cls``: one logit per class) are recognised too.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field

import torch

from util.common.errors import DataError
from util.common.hierarchy import DATA_DIR

from .checkpoint import load_local_checkpoint

DEFAULT_MAPPING = os.path.join(DATA_DIR, 'coco-to-oid-classes.csv')
COCO_NUM_CLASSES = 80
_DENSE_CLS_PRIOR = 0.01    # mmdetection's prior probability for a fresh sigmoid class branch


@dataclass
class ConversionReport:
    copied: list[tuple[str, str]] = field(default_factory=list)   # (source class name, target mid) copied
    converted_keys: list[str] = field(default_factory=list)       # class-specific tensors rebuilt
    kept_keys: int = 0
    source: str = 'COCO'                                            # what the source classes are called

    def summary(self) -> str:
        lines = [f'kept {self.kept_keys} tensors unchanged; rebuilt {len(self.converted_keys)} class-specific '
                 f'tensors (other {self.source} rows dropped):']
        lines += [f'  {k}' for k in self.converted_keys]
        lines.append(f'copied {len(self.copied)} {self.source} classes into their new rows:')
        lines += [f'  {name} -> {mid}' for name, mid in self.copied]
        return '\n'.join(lines)


def read_mapping(path: str = DEFAULT_MAPPING) -> dict[str, tuple[int, str]]:
    """{oid mid: (coco index, coco name)} from the mapping table."""
    with open(path, newline='') as f:
        return {r['oid_mid']: (int(r['coco_index']), r['coco_name']) for r in csv.DictReader(f)}


def subset_mapping(from_mids: list[str], to_mids: list[str],
                   names: dict[str, str] | None = None) -> dict[str, tuple[int, str]]:
    """{mid: (row in the source model, class name)} for a subset ``to_mids`` of ``from_mids``; a class outside
    the source model is a DataError (an expert is selected from its parent model, never grown)."""
    row = {m: i for i, m in enumerate(from_mids)}
    missing = [m for m in to_mids if m not in row]
    if missing:
        raise DataError(f'{len(missing)} of the {len(to_mids)} target classes are not classes of the source '
                        f'model ({", ".join(missing[:5])}{", ..." if len(missing) > 5 else ""})')
    names = names or {}
    return {m: (row[m], f'{names.get(m, m)} (row {row[m]})') for m in to_mids}


def _kind(key: str, shape: torch.Size, num_source: int) -> str | None:
    if re.search(r'fc_cls\.(weight|bias)$', key) and shape[0] == num_source + 1:
        return 'cls'
    if re.search(r'fc_cls\.(weight|bias)$', key) and shape[0] == num_source:
        return 'cls_no_background'    # sigmoid / federated heads: one logit per class
    if re.search(r'fc_reg\.(weight|bias)$', key) and shape[0] == 4 * num_source:
        return 'reg'
    if re.search(r'conv_logits\.(weight|bias)$', key) and shape[0] == num_source:
        return 'mask'
    if re.search(r'rtm_cls\.\d+\.(weight|bias)$', key) and shape[0] == num_source:
        return 'dense'
    return None


def _init_rows(kind: str, key: str, shape, generator) -> torch.Tensor:
    out = torch.zeros(shape)
    if key.endswith('.bias'):
        if kind == 'dense':
            return out.fill_(-float(torch.log(torch.tensor((1 - _DENSE_CLS_PRIOR) / _DENSE_CLS_PRIOR))))
        return out
    if kind in ('cls', 'cls_no_background', 'dense'):
        return out.normal_(0, 0.01, generator=generator)
    if kind == 'reg':
        return out.normal_(0, 0.001, generator=generator)
    fan_out = shape[0] * (shape[2] * shape[3] if len(shape) == 4 else 1)
    return out.normal_(0, (2.0 / fan_out) ** 0.5, generator=generator)


def convert_state_dict(state: dict, target_mids: list[str], mapping: dict[str, tuple[int, str]],
                       num_source: int = COCO_NUM_CLASSES, seed: int = 0, source: str = 'COCO'):
    """Return (new state dict, report) for a model whose classes are ``target_mids`` in that order;
    ``mapping`` gives a target mid its row among the ``num_source`` classes of the checkpoint."""
    n = len(target_mids)
    pairs = [(new, mapping[mid][0]) for new, mid in enumerate(target_mids) if mid in mapping]
    report = ConversionReport(copied=[(mapping[target_mids[i]][1], target_mids[i]) for i, _ in pairs],
                              source=source)
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        kind = _kind(key, value.shape, num_source)
        if kind is None:
            out[key] = value
            report.kept_keys += 1
            continue
        rows = {'cls': n + 1, 'cls_no_background': n, 'reg': 4 * n, 'mask': n, 'dense': n}[kind]
        new = _init_rows(kind, key, (rows, *value.shape[1:]), gen).to(value.dtype)
        for dst, src in pairs:
            if kind == 'reg':
                new[4 * dst:4 * dst + 4] = value[4 * src:4 * src + 4]
            else:
                new[dst] = value[src]
        if kind == 'cls':
            new[n] = value[num_source]  # background is the last row in mmdetection
        out[key] = new
        report.converted_keys.append(key)
    return out, report


def convert_checkpoint(src: str, dst: str, target_mids: list[str], mapping_csv: str = DEFAULT_MAPPING,
                       num_coco: int = COCO_NUM_CLASSES, seed: int = 0,
                       from_mids: list[str] | None = None, names: dict[str, str] | None = None) -> ConversionReport:
    """Write ``dst``: ``src`` converted to ``target_mids``. ``from_mids`` (the classes of ``src``, in its
    order) selects the target rows from them (an expert); without it the COCO table ``mapping_csv`` is
    used for a COCO checkpoint of ``num_coco`` classes."""
    ckpt = load_local_checkpoint(src, map_location='cpu')      # a one-line DataError if unreadable
    state = ckpt.get('state_dict', ckpt)
    if from_mids is not None:
        mapping, num_source, source = subset_mapping(from_mids, target_mids, names), len(from_mids), 'source-model'
        hint = f'a checkpoint of a model of those {num_source} classes'
    else:
        mapping, num_source, source = read_mapping(mapping_csv), num_coco, 'COCO'
        hint = 'a COCO-trained mmdetection checkpoint'
    new_state, report = convert_state_dict(state, target_mids, mapping, num_source, seed, source)
    if not report.converted_keys:
        raise DataError(f'{src}: no class-specific head tensors for {num_source} classes found (is it {hint}?)')
    meta = dict(ckpt.get('meta', {}) or {})
    meta.pop('dataset_meta', None)
    meta['converted_from'] = os.path.basename(src)
    tmp = f'{dst}.tmp'
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    try:
        torch.save({'state_dict': new_state, 'meta': meta}, tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    os.replace(tmp, dst)
    return report
