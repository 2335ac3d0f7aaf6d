"""COCO-trained mmdetection checkpoint -> a checkpoint for N Open Images classes.

The reference dropped the class-specific head layers and let them start from scratch. We do the same for
classes without a COCO counterpart, and copy the rows of those that have one (``data/coco-to-oid-classes.csv``:
person, car, dog, ...) into the new heads, so they start trained. Class-specific tensors are recognised by
their first dimension: ``fc_cls`` (COCO classes + background), class-specific ``fc_reg`` (4 per class) and
the mask heads' ``conv_logits`` (one channel per class). New rows are initialised as mmdetection initialises
those layers (normal 0.01 / 0.001, Kaiming for mask logits), from a fixed seed.
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


@dataclass
class ConversionReport:
    copied: list[tuple[str, str]] = field(default_factory=list)   # (coco name, oid mid) copied
    converted_keys: list[str] = field(default_factory=list)       # class-specific tensors rebuilt
    kept_keys: int = 0

    def summary(self) -> str:
        lines = [f'kept {self.kept_keys} tensors unchanged; rebuilt {len(self.converted_keys)} class-specific '
                 f'tensors (other COCO rows dropped):']
        lines += [f'  {k}' for k in self.converted_keys]
        lines.append(f'copied {len(self.copied)} COCO classes into their Open Images rows:')
        lines += [f'  {coco} -> {mid}' for coco, mid in self.copied]
        return '\n'.join(lines)


def read_mapping(path: str = DEFAULT_MAPPING) -> dict[str, tuple[int, str]]:
    """{oid mid: (coco index, coco name)} from the mapping table."""
    with open(path, newline='') as f:
        return {r['oid_mid']: (int(r['coco_index']), r['coco_name']) for r in csv.DictReader(f)}


def _kind(key: str, shape: torch.Size, num_coco: int) -> str | None:
    if re.search(r'fc_cls\.(weight|bias)$', key) and shape[0] == num_coco + 1:
        return 'cls'
    if re.search(r'fc_reg\.(weight|bias)$', key) and shape[0] == 4 * num_coco:
        return 'reg'
    if re.search(r'conv_logits\.(weight|bias)$', key) and shape[0] == num_coco:
        return 'mask'
    return None


def _init_rows(kind: str, key: str, shape, generator) -> torch.Tensor:
    out = torch.zeros(shape)
    if key.endswith('.bias'):
        return out
    if kind == 'cls':
        return out.normal_(0, 0.01, generator=generator)
    if kind == 'reg':
        return out.normal_(0, 0.001, generator=generator)
    fan_out = shape[0] * (shape[2] * shape[3] if len(shape) == 4 else 1)
    return out.normal_(0, (2.0 / fan_out) ** 0.5, generator=generator)


def convert_state_dict(state: dict, target_mids: list[str], mapping: dict[str, tuple[int, str]],
                       num_coco: int = COCO_NUM_CLASSES, seed: int = 0):
    """Return (new state dict, report) for a model whose classes are ``target_mids`` in that order."""
    n = len(target_mids)
    pairs = [(new, mapping[mid][0]) for new, mid in enumerate(target_mids) if mid in mapping]
    report = ConversionReport(copied=[(mapping[target_mids[i]][1], target_mids[i]) for i, _ in pairs])
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        kind = _kind(key, value.shape, num_coco)
        if kind is None:
            out[key] = value
            report.kept_keys += 1
            continue
        rows = {'cls': n + 1, 'reg': 4 * n, 'mask': n}[kind]
        new = _init_rows(kind, key, (rows, *value.shape[1:]), gen).to(value.dtype)
        for dst, src in pairs:
            if kind == 'reg':
                new[4 * dst:4 * dst + 4] = value[4 * src:4 * src + 4]
            else:
                new[dst] = value[src]
        if kind == 'cls':
            new[n] = value[num_coco]  # background is the last row in mmdetection
        out[key] = new
        report.converted_keys.append(key)
    return out, report


def convert_checkpoint(src: str, dst: str, target_mids: list[str], mapping_csv: str = DEFAULT_MAPPING,
                       num_coco: int = COCO_NUM_CLASSES, seed: int = 0) -> ConversionReport:
    ckpt = load_local_checkpoint(src, map_location='cpu')      # a one-line DataError if unreadable
    state = ckpt.get('state_dict', ckpt)
    new_state, report = convert_state_dict(state, target_mids, read_mapping(mapping_csv), num_coco, seed)
    if not report.converted_keys:
        raise DataError(f'{src}: no class-specific head tensors for {num_coco} classes found '
                        '(is it a COCO-trained mmdetection checkpoint?)')
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
