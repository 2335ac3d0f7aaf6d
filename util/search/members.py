"""The cached predictions of an ensemble's members, and the two validation folds.

Every member x view predicted the validation images once (``tools/ensemble_search.py`` writes one
submission CSV per member x view into the cache folder); a trial fuses them without a model. They are
read once into memory: per image, per member-view, the (label, score, EncodedMask) triples.

A parent ensemble (the leaf + parent combine of ``util.post.pipeline``) is a second MemberSet over the
same images, held as the leaf set's ``parent`` with the class hierarchy its chain expands with: one object
that a metric session's workers receive once (``worker_data``), and one place that knows which
member-views are parent ones. Member names are unique across both: weights and calibration maps are keyed
by them.

    MemberSet.from_files(named_paths)   -> MemberSet (names, member of each, sizes, detections)
    leaf.with_parent(parent, hierarchy) -> leaf, now combining with ``parent`` (same images and sizes)
    split_folds(image_ids, seed)        -> (fold A ids, fold B ids): a seeded hash, any input order
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ..common.errors import DataError
from ..common.hierarchy import DEFAULT_HIERARCHY
from ..common.submission import SubmissionError, iter_submission
from ..post.mask_nms import MaskIoUs


@dataclass
class MemberSet:
    """``names[k]``: member-view k (e.g. ``l1@1333x800f``); ``member_of[k]``: its member's name (weights and
    calibration are per member); ``sizes``: image id -> (height, width); ``dets[image_id][k]``: triples;
    ``parent``: the parent ensemble's member-views (a MemberSet of the same images) or None; ``hierarchy``:
    the hierarchy JSON the combine expands with (``util.post.pipeline --hierarchy``)."""
    names: list
    member_of: list
    sizes: dict = field(default_factory=dict)
    dets: dict = field(default_factory=dict)
    parent: MemberSet | None = None
    hierarchy: str = DEFAULT_HIERARCHY
    _ious: dict = field(default_factory=dict, repr=False, compare=False)

    def ious(self, image_id: str, step: str = 'fuse') -> MaskIoUs:
        """The image's remembered mask IoUs (trials fuse the same member masks; in each process that fuses);
        one memo per ``step`` (the fusion's, the combine's), so that one does not crowd out the other."""
        key = image_id if step == 'fuse' else (step, image_id)
        memo = self._ious.get(key)
        if memo is None:
            memo = self._ious[key] = MaskIoUs()
        return memo

    @property
    def members(self) -> list:
        return list(dict.fromkeys(self.member_of))

    @property
    def all_members(self) -> list:
        """Every member with a weight: the leaf ones, then the parent ensemble's."""
        return self.members + (self.parent.members if self.parent is not None else [])

    def with_parent(self, parent: MemberSet, hierarchy: str = DEFAULT_HIERARCHY, what: str = 'the parent '
                    'ensemble') -> MemberSet:
        """This set, combining with ``parent`` (``what`` names it in errors: e.g. its cache folder)."""
        clash = sorted(set(self.members) & set(parent.members))
        if clash:
            raise DataError(f'{what}: member {clash[0]!r} is also a leaf member: weights and calibration are '
                            'keyed by member name, give the parent members other names')
        for image_id, size in parent.sizes.items():
            known = self.sizes.get(image_id)
            if known is None:
                raise DataError(f'{what}: image {image_id} is not among the leaf members\' images')
            if known != size:
                raise DataError(f'{what}: image {image_id} is {size[1]}x{size[0]} (WxH), the leaf members '
                                f'say {known[1]}x{known[0]}')
        if len(parent.sizes) != len(self.sizes):
            missing = sorted(set(self.sizes) - set(parent.sizes))[0]
            raise DataError(f'{what}: no predictions of image {missing}, which the leaf members predicted')
        self.parent, self.hierarchy = parent, hierarchy
        return self

    @classmethod
    def from_files(cls, views: list[tuple[str, str, str]]) -> MemberSet:
        """``views``: (member name, view name, submission CSV) per member-view. Every file must list the
        same images with the same sizes (they predicted the same validation split)."""
        if not views:
            raise DataError('no cached member predictions given')
        out = cls([f'{m}@{v}' for m, v, _ in views], [m for m, _, _ in views])
        for k, (_, _, path) in enumerate(views):
            seen = set()
            try:
                for row in iter_submission(path):
                    size = (row.height, row.width)
                    known = out.sizes.setdefault(row.image_id, size)
                    if known != size:
                        raise DataError(f'{path}:{row.line}: image {row.image_id} is {size[1]}x{size[0]} '
                                        f'(WxH), {views[0][2]} says {known[1]}x{known[0]}')
                    out.dets.setdefault(row.image_id, [[] for _ in views])[k] = list(row.detections)
                    seen.add(row.image_id)
            except SubmissionError as e:
                raise DataError(str(e)) from None
            if k and seen != set(out.sizes):
                extra = sorted(seen ^ set(out.sizes))
                raise DataError(f'{path}: lists other images than {views[0][2]} (first differing: {extra[0]})')
        return out


def split_folds(image_ids, seed: int = 0) -> tuple[list, list]:
    """Two near-equal folds by a seeded hash of each id: the same split for the same ids and seed."""
    def key(i):
        return hashlib.sha1(f'{seed}:{i}'.encode()).hexdigest()
    ranked = sorted(set(image_ids), key=key)
    return sorted(ranked[0::2]), sorted(ranked[1::2])
