"""An iteration-based training loop that resumes without re-reading the images already trained on."""
from __future__ import annotations

import logging

from mmdet.registry import LOOPS
from mmengine.logging import print_log
from mmengine.runner.loops import IterBasedTrainLoop, _InfiniteDataloaderIterator


class _Consumed:
    """Iterator whose first ``n`` items are placeholders: mmengine's loop drops ``n`` batches on resume,
    and these were already skipped by the batch sampler."""

    def __init__(self, iterator, n: int):
        self._iterator, self._left = iterator, n

    def __iter__(self):
        return self

    def __next__(self):
        if self._left:
            self._left -= 1
            return None
        return next(self._iterator)


@LOOPS.register_module()
class ResumableIterBasedTrainLoop(IterBasedTrainLoop):
    """``IterBasedTrainLoop`` that, on resume at iteration k, tells a batch sampler with ``skip`` (see
    ``mmdet_ext.samplers``) to start k batches in, instead of loading and dropping k batches. When the batch
    sampler has no ``skip`` or declines (an epoch-based sampler such as ``ClassAwareSampler``), mmengine's
    own fast-forward runs."""

    def run(self) -> None:
        batch_sampler = getattr(self.dataloader, 'batch_sampler', None)
        if self._iter > 0 and hasattr(batch_sampler, 'skip') and batch_sampler.skip(self._iter):
            # A fresh iterator over the dataloader starts a fresh pass of the batch sampler, from batch k.
            self.dataloader_iterator = _Consumed(_InfiniteDataloaderIterator(self.dataloader), self._iter)
            print_log(f'resume: the batch sampler skips the {self._iter} batches already trained on '
                      '(indices only, no image is read)', logger='current', level=logging.INFO)
        super().run()
