"""The cached predictions of an ensemble's members, and the two validation folds.

Every member x view predicted the validation images once (``tools/ensemble_search.py`` writes one
submission CSV per member x view into the cache folder); a trial fuses them without a model. They are
read once into memory: per image, per member-view, the (label, score, EncodedMask) triples.

    MemberSet.from_files(named_paths)   -> MemberSet (names, member of each, sizes, detections)
    split_folds(image_ids, seed)        -> (fold A ids, fold B ids): a seeded hash, any input order
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ..common.errors import DataError
from ..common.submission import SubmissionError, iter_submission
from ..post.mask_nms import MaskIoUs


@dataclass
class MemberSet:
    """``names[k]``: member-view k (e.g. ``l1@1333x800f``); ``member_of[k]``: its member's name (weights and
    calibration are per member); ``sizes``: image id -> (height, width); ``dets[image_id][k]``: triples."""
    names: list
    member_of: list
    sizes: dict = field(default_factory=dict)
    dets: dict = field(default_factory=dict)
    _ious: dict = field(default_factory=dict, repr=False, compare=False)

    def ious(self, image_id: str) -> MaskIoUs:
        """The image's remembered mask IoUs (trials fuse the same member masks; in each process that fuses)."""
        memo = self._ious.get(image_id)
        if memo is None:
            memo = self._ious[image_id] = MaskIoUs()
        return memo

    @property
    def members(self) -> list:
        return list(dict.fromkeys(self.member_of))

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
