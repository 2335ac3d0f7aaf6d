"""Ensembles of mmdetection instance-segmentation models: members (``members``: weights, class-subset
experts), views (``views``), and the fusions of the ``FUSIONS`` registry (``fusion``): shared proposals
(``tta``), late fusion with WBF / NMS / soft-NMS (``late``), and the fusion a search chooses, every member
x view fused as ``util.post.fuse`` fuses submissions (``member_views``); sharded test runs that write the results
format of ``util.post.results_io`` (see ``runner``). An image that does not decode is an
``UnreadableImage`` (``views``)."""
from .fusion import FUSIONS, NMS, WBF, SharedProposals, SoftNMS
from .member_views import SubmissionFusion
from .members import ClassMap, Member
from .proposals import merge_proposals
from .timing import StageTimer
from .views import UnreadableImage, ViewMaker, ViewSpec, view_specs

__all__ = [
           'FUSIONS',
           'NMS',
           'WBF',
           'ClassMap',
           'Member',
           'SharedProposals',
           'SoftNMS',
           'SubmissionFusion',
           'StageTimer',
           'UnreadableImage',
           'ViewMaker',
           'ViewSpec',
           'merge_proposals',
           'view_specs',
]
