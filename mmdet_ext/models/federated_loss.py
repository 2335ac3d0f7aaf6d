"""Federated sigmoid classification loss for the RoI bbox heads (Zhou et al. 2021, as in LVIS training).

On a federated dataset an object of a class nobody verified for the image is not annotated, so a softmax
(or a sigmoid over all classes) teaches it as background. Here every class has its own sigmoid, and the
negative term of a class counts for a RoI only when that class is *known* for the RoI's image (verified
present or absent, or annotated in it; ``FederatedCascadeRoIHead`` passes these as ``image_classes``) or
is in this iteration's sample of other classes, drawn with probability ~ frequency ** ``freq_power``. The
positive term of a RoI's own class always counts. Without ``image_classes`` every class is known: the loss
is then plain sigmoid cross-entropy (mmdet's ``CrossEntropyLoss(use_sigmoid=True)``).

The head gets ``num_classes`` logits (no background logit); scores keep the C+1 layout mmdet's heads, NMS
and ``mmdet_ext.ensemble`` expect: per-class sigmoid probabilities plus a background column
``1 - max p`` (dropped by NMS). The sample is seeded by ``(seed, iteration)`` (the runner's iteration
when there is one), so the three cascade stages of one iteration share it and a resumed run draws the same.

Frequencies (``freq_file``): the train mask counts CSV of the challenge (``class,count`` by MID; default the
one in ``data/``, mapped through ``freq_subset``), or an annotation file (.pkl / .json), whose instances
are counted per class index.
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.models.losses import accuracy
from mmdet.registry import MODELS

from util.common.hierarchy import DEFAULT_MASK_COUNTS, load_default, read_mask_counts
from util.data.annotations import load_annotations


def class_frequencies(freq_file: str | None, freq_subset: str | None, num_classes: int) -> torch.Tensor:
    """Per-class instance counts (float, length ``num_classes``) from a counts CSV or an annotation file."""
    path = freq_file or DEFAULT_MASK_COUNTS
    if os.path.splitext(path)[1].lower() in ('.pkl', '.pickle', '.json'):
        counts = torch.zeros(num_classes, dtype=torch.float64)
        for item in load_annotations(path)['data_list']:
            for inst in item['instances']:
                if not inst.get('ignore_flag', 0):
                    counts[int(inst['bbox_label'])] += 1
        return counts.float()
    mids = load_default().subset(freq_subset or 'leaf')
    if len(mids) != num_classes:
        raise ValueError(f'freq_subset {freq_subset!r} has {len(mids)} classes, the head has {num_classes}')
    by_mid = read_mask_counts(path)
    return torch.tensor([float(by_mid.get(m, 0)) for m in mids])


@MODELS.register_module()
class FederatedSigmoidLoss(nn.Module):
    """Args:
        num_sampled: classes drawn per iteration (beyond the batch's known ones) whose negatives count.
        freq_power: sampling weight = frequency ** freq_power (0.5 in the paper).
        freq_file / freq_subset: where the frequencies come from (module docstring).
        seed: seed of the per-iteration sample.
        loss_weight: multiplies the loss.
    """
    custom_cls_channels = True
    custom_activation = True
    custom_accuracy = True

    def __init__(self, num_sampled: int = 50, freq_power: float = 0.5, freq_file: str | None = None,
                 freq_subset: str | None = 'leaf', seed: int = 0, loss_weight: float = 1.0):
        super().__init__()
        self.use_sigmoid = True
        self.num_sampled = int(num_sampled)
        self.freq_power = float(freq_power)
        self.freq_file = freq_file
        self.freq_subset = freq_subset
        self.seed = int(seed)
        self.loss_weight = float(loss_weight)
        self._weights = None
        self._calls = 0

    # ---- the head's interface for custom classification losses -------------------------------------
    def get_cls_channels(self, num_classes: int) -> int:
        return num_classes

    def get_activation(self, cls_score: torch.Tensor) -> torch.Tensor:
        """Logits (N, C) -> (N, C+1): sigmoid probabilities and a background column 1 - max p."""
        probs = cls_score.sigmoid()
        background = 1 - probs.max(dim=1, keepdim=True)[0] if probs.shape[1] else probs.new_ones(len(probs), 1)
        return torch.cat([probs, background], dim=1)

    def get_accuracy(self, cls_score: torch.Tensor, labels: torch.Tensor) -> dict:
        return dict(acc=accuracy(self.get_activation(cls_score), labels))

    # ---- sampling ------------------------------------------------------------------------------------
    def sampling_weights(self, num_classes: int) -> torch.Tensor:
        if self._weights is None or len(self._weights) != num_classes:
            freq = class_frequencies(self.freq_file, self.freq_subset, num_classes)
            self._weights = freq.clamp(min=0) ** self.freq_power
        return self._weights

    def _iteration(self) -> int:
        try:
            from mmengine.logging import MessageHub
            it = MessageHub.get_current_instance().get_info('iter')
        except Exception:       # no runner: count the calls instead
            it = None
        if it is None:
            self._calls += 1
            return self._calls
        return int(it)

    def sample_classes(self, num_classes: int, known: torch.Tensor) -> torch.Tensor:
        """(C,) bool: ``num_sampled`` classes outside ``known`` drawn ~ frequency ** power, seeded."""
        chosen = torch.zeros(num_classes, dtype=torch.bool)
        if self.num_sampled <= 0 or bool(known.all()):
            return chosen
        weights = self.sampling_weights(num_classes).clone()
        weights[known.cpu()] = 0
        k = min(self.num_sampled, int((weights > 0).sum()))
        if k > 0:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self._iteration())
            chosen[torch.multinomial(weights, k, replacement=False, generator=g)] = True
        return chosen

    # ---- the loss ------------------------------------------------------------------------------------
    def forward(self, cls_score: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None,
                avg_factor: float | None = None, reduction_override: str | None = None,
                image_classes: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """``cls_score`` (N, C) logits, ``labels`` (N,) in [0, C] (C = background), ``weight`` (N,) per RoI,
        ``image_classes`` (N, C) bool: the classes known for each RoI's image (None: all)."""
        reduction = reduction_override or 'mean'
        n, c = cls_score.shape
        target = F.one_hot(labels.clamp(0, c), c + 1)[:, :c].to(cls_score.dtype)
        per_class = cls_score.new_ones(n, c)
        if image_classes is not None:
            known = image_classes.bool()
            mask = known | self.sample_classes(c, known.any(dim=0)).to(known.device)[None, :]
            per_class = (mask | target.bool()).to(cls_score.dtype)
        if weight is not None:
            per_class = per_class * weight.reshape(-1, 1).to(cls_score.dtype)
        loss = F.binary_cross_entropy_with_logits(cls_score, target, reduction='none') * per_class
        if reduction == 'none':
            return self.loss_weight * loss
        if reduction == 'sum':
            return self.loss_weight * loss.sum()
        if avg_factor is None:            # as mmdet's weight_reduce_loss: the mean of every element
            return self.loss_weight * loss.mean()
        return self.loss_weight * loss.sum() / avg_factor
