"""The evaluated class list: the class CSV's MIDs with their expansions in the hierarchy.

    load_classes(hierarchy_json, classes_csv)   -> (rules.Classes, {mid: name})
"""
from __future__ import annotations

from ..common.errors import DataError
from ..common.hierarchy import Hierarchy, read_class_names
from .rules import Classes


def load_classes(hierarchy_json: str, classes_csv: str) -> tuple[Classes, dict]:
    """The class CSV's MIDs (in file order) with the hierarchy's expansions, and their names."""
    try:
        names = read_class_names(classes_csv)
        hierarchy = Hierarchy.from_json(hierarchy_json, classes_csv=None)
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f'{getattr(e, "filename", None) or hierarchy_json}: {e}') from None
    if not names:
        raise DataError(f'{classes_csv}: no classes')
    return Classes(list(names), hierarchy), names
