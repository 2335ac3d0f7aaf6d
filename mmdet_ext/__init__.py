"""mmdetection plugins of this project, loaded by configs through ``custom_imports=dict(imports=['mmdet_ext'])``.

Importing the package registers: the checkpoint-loading fix for torch >= 2.6 (``checkpoint``), the Open
Images dataset (``datasets``), a ``gs://`` storage backend (``fileio``), the cascade head with one
class-count argument and its federated twin (sigmoid loss over the classes verified per image, box-only boxes
ignored by the assigners: ``models``), the ensemble fusions (``ensemble``), the challenge metric (``challenge_metric``), and a train loop and batch sampler
that resume without re-reading the images already trained on (``loops``, ``samplers``).
``apply_device_defaults`` adapts fp16 / nccl configs to CPU-only machines.
"""
from . import (  # noqa: F401  (resume without re-reading trained images)
    checkpoint,  # noqa: F401  (registers the weights_only=False loaders)
    fileio,  # noqa: F401  (registers the gs:// storage backend)
    loops,
    samplers,
)
from .challenge_metric import OIDChallengeMetric
from .datasets import OIDInstanceDataset
from .device import apply_device_defaults
from .models import OIDCascadeRoIHead

__all__ = ['apply_device_defaults', 'OIDCascadeRoIHead', 'OIDChallengeMetric', 'OIDInstanceDataset']
