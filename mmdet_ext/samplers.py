"""A batch sampler that can start k batches into its stream without loading those batches' images.

mmengine resumes an iteration-based run at iteration k by fetching k batches through the DataLoader and
dropping them: every image is read and augmented again. At the challenge's scale (150k+ iterations of 16
images) that is hours before the first step. Batch samplers only handle indices (and, for aspect-ratio
grouping, each image's width and height from the annotations), so skipping at this level costs seconds
and yields exactly the batches the uninterrupted run would have trained on next.
"""
from __future__ import annotations

import itertools

from mmdet.datasets.samplers import AspectRatioBatchSampler
from mmdet.registry import DATA_SAMPLERS
from mmengine.dataset import InfiniteSampler


@DATA_SAMPLERS.register_module()
class ResumableAspectRatioBatchSampler(AspectRatioBatchSampler):
    """mmdet's ``AspectRatioBatchSampler`` with ``skip(batches)``: the next pass restarts the index stream
    from its beginning and drops that many batches. Only an endless stream whose order depends on its seed
    alone (mmengine's ``InfiniteSampler``) can be replayed so; for other samplers ``skip`` declines."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pending_skip = None

    def skip(self, batches: int) -> bool:
        """Arrange for the next pass to start ``batches`` in; False (nothing arranged) if it cannot."""
        if not isinstance(self.sampler, InfiniteSampler):
            return False
        self._pending_skip = int(batches)
        return True

    def __iter__(self):
        if self._pending_skip is None:
            yield from super().__iter__()
            return
        skip, self._pending_skip = self._pending_skip, None
        # InfiniteSampler keeps one generator for its lifetime, so a new pass would go on from wherever an
        # earlier iterator (the DataLoader's first, prefetching one) left it, or find it closed.
        self.sampler.indices = self.sampler._indices_of_rank()
        # Images left in the buckets by that earlier iterator are not part of the restarted stream.
        self._aspect_ratio_buckets = [[] for _ in range(2)]
        yield from itertools.islice(super().__iter__(), skip, None)
