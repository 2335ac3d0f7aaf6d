"""Mask-aware test-time augmentation and multi-model ensembling (see ``tta``), and sharded test runs
that write the results format of ``util.post.results_io`` (see ``runner``). An image that does not
decode is an ``UnreadableImage`` (``views``)."""
from .proposals import merge_proposals
from .timing import StageTimer
from .tta import EnsembleTTA
from .views import UnreadableImage, ViewMaker, ViewSpec, view_specs

__all__ = ['EnsembleTTA', 'merge_proposals', 'StageTimer', 'UnreadableImage', 'ViewMaker', 'ViewSpec',
           'view_specs']
