"""The challenge's class hierarchy: leaves, parents, ancestors, descendants, depth layers, class subsets.

The hierarchy JSON is a tree of ``{"LabelName": mid, "Subcategory": [...]}`` nodes under the root
``/m/0bl9f``. A label may appear under more than one parent (Teddy bear is under Toy and under Bear), so
ancestors and descendants are sets, never a single chain. Class order everywhere is the order of first
occurrence in a pre-order walk of the JSON ("hierarchy order"), which is stable across runs and machines.

    h = Hierarchy.from_json(path)
    h.leaves                   # 275 MIDs, hierarchy order
    h.ancestors('/m/0kmg4')    # {Toy, Bear, Carnivore}
    h.subset('parent23')       # the parent model's classes
    h.subset('data/subsets/leaf-rare-100.txt')   # a class-list file, returned in hierarchy order
"""
from __future__ import annotations

import argparse
import csv
import json
import os
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .errors import DataError
from .textio import open_text

ROOT = '/m/0bl9f'
# The challenge's class files ship in the repository's data/ folder (two levels above this package).
DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'data')
DEFAULT_HIERARCHY = os.path.join(DATA_DIR, 'challenge-2019-label300-segmentable-hierarchy.json')
DEFAULT_CLASSES = os.path.join(DATA_DIR, 'challenge-2019-classes-description-segmentable.csv')
DEFAULT_MASK_COUNTS = os.path.join(DATA_DIR, 'challenge-2019-train-mask-counts.csv')

SUBSETS = ('leaf', 'parent', 'parent23', 'parent25', 'layer0', 'layer1', 'all')
SUBSET_HELP = (f'class subset: a preset ({", ".join(SUBSETS)}) or a class-list file (one MID per line, or '
               'Google\'s "MID,Name" CSV, or a CSV with a LabelName column; # comments); classes are used in '
               'hierarchy order whatever the file order')


@dataclass
class Hierarchy:
    """Parent/child relations of the labels below the root (the root itself is not a class)."""
    order: list[str]                       # every label once, hierarchy order
    parents: dict[str, set[str]]           # label -> direct parents (root excluded)
    children: dict[str, list[str]]         # label -> direct children, hierarchy order
    depth: dict[str, int]                  # depth of first occurrence, 0 = child of the root
    names: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, path: str = DEFAULT_HIERARCHY, classes_csv: str | None = DEFAULT_CLASSES):
        with open_text(path) as f:
            tree = json.load(f)
        if tree.get('LabelName') != ROOT:
            raise ValueError(f'{path}: root LabelName is {tree.get("LabelName")!r}, expected {ROOT}')
        order, parents, children, depth = [], {}, {}, {}

        def walk(node, parent, level):
            mid = node['LabelName']
            if mid not in depth:
                order.append(mid)
                depth[mid] = level
                parents[mid] = set()
                children[mid] = []
            if parent is not None:
                parents[mid].add(parent)
                if mid not in children[parent]:
                    children[parent].append(mid)
            for sub in node.get('Subcategory', []):
                walk(sub, mid, level + 1)

        for sub in tree.get('Subcategory', []):
            walk(sub, None, 0)
        names = read_class_names(classes_csv) if classes_csv else {}
        return cls(order, parents, children, depth, names)

    # ---- relations -------------------------------------------------------------------------------
    def ancestors(self, mid: str) -> set[str]:
        """All labels above ``mid`` (root excluded), through every parent."""
        return set(self._ancestors[mid])

    def descendants(self, mid: str) -> set[str]:
        """All labels below ``mid``."""
        return set(self._descendants[mid])

    def ancestors_in_order(self, mid: str) -> list[str]:
        """Ancestors in hierarchy order (deterministic iteration for expansion)."""
        return self._ancestors[mid]

    @cached_property
    def _ancestors(self) -> dict[str, list[str]]:
        out = {}
        rank = self.rank

        def up(mid):
            if mid not in out:
                acc = set()
                for p in self.parents[mid]:
                    acc.add(p)
                    acc.update(up(p))
                out[mid] = sorted(acc, key=rank.__getitem__)
            return out[mid]

        for mid in self.order:
            up(mid)
        return out

    @cached_property
    def _descendants(self) -> dict[str, list[str]]:
        acc = {mid: set() for mid in self.order}
        for mid, ups in self._ancestors.items():
            for a in ups:
                acc[a].add(mid)
        return {m: sorted(s, key=self.rank.__getitem__) for m, s in acc.items()}

    @cached_property
    def rank(self) -> dict[str, int]:
        return {mid: i for i, mid in enumerate(self.order)}

    # ---- class sets ------------------------------------------------------------------------------
    @cached_property
    def leaves(self) -> list[str]:
        return [m for m in self.order if not self.children[m]]

    @cached_property
    def parent_labels(self) -> list[str]:
        """Every label with children (25 in the challenge)."""
        return [m for m in self.order if self.children[m]]

    @cached_property
    def grandparents(self) -> list[str]:
        """Labels with a child that has children (Carnivore, Reptile)."""
        return [m for m in self.parent_labels if any(self.children[c] for c in self.children[m])]

    def layer(self, k: int) -> list[str]:
        """The 20th place's layers: 0 = labels first seen at depth 0, 1 = all the others."""
        return [m for m in self.order if (self.depth[m] == 0) == (k == 0)]

    def subset(self, name: str) -> list[str]:
        """Class list of a named subset or of a class-list file, hierarchy order. ``parent`` means the 23
        of the parent model. A preset name wins over a file of that name (write ``./leaf`` for the file)."""
        if name not in SUBSETS and os.path.isfile(name):
            return read_class_file(name, self)
        if name == 'leaf':
            return list(self.leaves)
        if name in ('parent', 'parent23'):
            gp = set(self.grandparents)
            return [m for m in self.parent_labels if m not in gp]
        if name == 'parent25':
            return list(self.parent_labels)
        if name == 'layer0':
            return self.layer(0)
        if name == 'layer1':
            return self.layer(1)
        if name == 'all':
            return list(self.order)
        raise ValueError(f'unknown class subset {name!r}; choose one of {", ".join(SUBSETS)}')

    def expand(self, mid: str) -> list[str]:
        """``mid`` followed by its ancestors: the labels a ground-truth box counts for."""
        return [mid] + self._ancestors[mid]

    def name(self, mid: str) -> str:
        return self.names.get(mid, mid)


def read_class_names(path: str = DEFAULT_CLASSES) -> dict[str, str]:
    """``MID,Name`` rows without a header -> {mid: name}."""
    with open_text(path) as f:
        return {row[0]: row[1] for row in csv.reader(f) if row}


def read_mask_counts(path: str = DEFAULT_MASK_COUNTS) -> dict[str, int]:
    """``class,count`` rows (train masks per label) -> {mid: count}."""
    with open_text(path) as f:
        return {row['class']: int(row['count']) for row in csv.DictReader(f)}


def load_default() -> Hierarchy:
    return Hierarchy.from_json(DEFAULT_HIERARCHY, DEFAULT_CLASSES)


def read_class_file(path: str, hierarchy: Hierarchy) -> list[str]:
    """A class-list file -> its MIDs in hierarchy order (the order a model trained on it and an ensemble
    member declared with it both use). Accepted: one MID per line; ``MID,Name`` rows (Google's
    classes-description CSV); a CSV whose header has a ``LabelName`` column. Blank lines and ``#``
    comments are skipped. Unknown MIDs, repeats and an empty list are a DataError naming file:line."""
    column, first_line, seen = 0, {}, None
    with open_text(path) as f:
        for line, row in enumerate(csv.reader(f), 1):
            cells = [c.strip() for c in row]
            if not any(cells) or cells[0].startswith('#'):
                continue
            if seen is None:                       # the first non-comment row: header or data
                seen = True
                if not cells[0].startswith('/'):
                    if 'LabelName' not in cells:
                        raise DataError(f'{path}:{line}: expected a MID (/m/...) or a header with LabelName, '
                                        f'got {row[0]!r}')
                    column = cells.index('LabelName')
                    continue
            mid = cells[column] if column < len(cells) else ''
            if mid not in hierarchy.rank:
                raise DataError(f'{path}:{line}: {mid!r} is not a class of the hierarchy')
            if mid in first_line:
                raise DataError(f'{path}:{line}: {mid} listed twice (first on line {first_line[mid]})')
            first_line[mid] = line
    if not first_line:
        raise DataError(f'{path}: no classes in the class list')
    return sorted(first_line, key=hierarchy.rank.__getitem__)


def subset_classes(hierarchy: Hierarchy, name_or_path: str) -> list[str]:
    """The classes of a preset name or a class-list file, hierarchy order; anything else is a DataError."""
    if name_or_path in SUBSETS or os.path.isfile(name_or_path):
        return hierarchy.subset(name_or_path)
    raise DataError(f'{name_or_path}: neither a file nor a class subset ({", ".join(SUBSETS)})')


def subset_arg(value: str) -> str:
    """argparse ``type=`` of a ``--subset``-like option: a preset name or an existing file (read later, where
    its errors name file:line)."""
    if value in SUBSETS or os.path.isfile(value):
        return value
    raise argparse.ArgumentTypeError(f'{value!r} is neither a preset ({", ".join(SUBSETS)}) nor a class-list file')


def class_list(spec: str, hierarchy: Hierarchy | None = None) -> list[str]:
    """Classes named on a command line: a subset name (``leaf``, ``parent23``, ...) or a class-list file
    (``read_class_file``), hierarchy order."""
    return subset_classes(hierarchy or load_default(), spec)


class ClassIndex:
    """A class list (MIDs) and each label's expansions through the hierarchy, as indices into the list: the
    one rule the metric scores by and federated training annotates by.

    ``up(mid)``: the label and its ancestors (what a GT row or a verified-present label counts for);
    ``down(mid)``: the label and its descendants (what a verified-absent label covers). Labels outside the
    hierarchy expand to themselves only; expansions keep only listed classes, so a subset of the hierarchy
    expands within that subset.
    """

    def __init__(self, mids, hierarchy: Hierarchy):
        self.mids = list(mids)
        self.index = {m: i for i, m in enumerate(self.mids)}
        if len(self.index) != len(self.mids):
            raise ValueError('class list has duplicate MIDs')
        self.hierarchy = hierarchy
        self._up: dict[str, tuple[int, ...]] = {}
        self._down: dict[str, tuple[int, ...]] = {}
        self._up_table = None

    def __len__(self):
        return len(self.mids)

    def known(self, mid: str) -> bool:
        return mid in self.hierarchy.parents

    def _indices(self, labels):
        return tuple(self.index[m] for m in labels if m in self.index)

    def up(self, mid: str) -> tuple[int, ...]:
        if mid not in self._up:
            above = self.hierarchy.ancestors_in_order(mid) if self.known(mid) else []
            self._up[mid] = self._indices([mid] + above)
        return self._up[mid]

    def up_table(self):
        """``up`` of every listed class, by index, as one table: (offsets, indices), class i's expansion
        being ``indices[offsets[i]:offsets[i + 1]]`` (made once; for expanding many detections at once)."""
        if self._up_table is None:
            ups = [self.up(mid) for mid in self.mids]
            self._up_table = (np.cumsum([0] + [len(u) for u in ups]).astype(np.int64),
                              np.asarray([c for u in ups for c in u], np.int64))
        return self._up_table

    def down(self, mid: str) -> tuple[int, ...]:
        if mid not in self._down:
            below = sorted(self.hierarchy.descendants(mid), key=self.hierarchy.rank.__getitem__) \
                if self.known(mid) else []
            self._down[mid] = self._indices([mid] + below)
        return self._down[mid]
