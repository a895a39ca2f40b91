"""Metric-learning heads: ArcFace and sub-center ArcFace (one module, k sub-centres), and supervised contrastive.

Every head has `loss(embeddings, labels)`, the training objective of a batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class ArcMarginHead(nn.Module):
    """Return scaled cosine logits with an additive angular margin on each row's true class.

    ArcFace (Deng et al. 2019) with `subcenters=1`; sub-center ArcFace (Deng et al. 2020) keeps
    `subcenters` weight vectors per class and uses the closest one, which tolerates noisy labels.
    Without labels (inference) it returns the scaled cosines without margin.
    """

    def __init__(
        self,
        embedding_dim: int,
        n_classes: int,
        *,
        scale: float = 30.0,
        margin: float = 0.5,
        easy_margin: bool = False,
        subcenters: int = 1,
    ) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.subcenters = subcenters
        self.scale = scale
        self.margin = margin
        self.easy_margin = easy_margin
        self.weight = nn.Parameter(torch.empty(n_classes * subcenters, embedding_dim))
        nn.init.xavier_uniform_(self.weight)
        self.margins: torch.Tensor | None = None  # per class; None: `margin` for every class

    def set_margins(self, margins) -> None:
        """Set the margin of every class (one value, or one per class): the warm-up and dynamic margins."""
        values = torch.as_tensor(margins, dtype=torch.float32).flatten()
        if bool((values == values[0]).all()):
            self.margin, self.margins = float(values[0]), None
        else:
            self.margins = values.expand(self.n_classes).clone()

    @torch.no_grad()
    def imprint(self, embeddings: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> None:
        """Set every class's centres to the mean direction of its rows' embeddings (sub-centres jittered)."""
        sums = torch.zeros(self.n_classes, embeddings.shape[1]).index_add_(0, labels, F.normalize(embeddings.float()))
        centres = F.normalize(sums).repeat_interleave(self.subcenters, dim=0)
        if self.subcenters > 1:
            centres = centres + 0.01 * torch.randn(centres.shape, generator=generator)
        self.weight.copy_(centres.to(self.weight.device, self.weight.dtype))

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        cosine = F.linear(F.normalize(embeddings.float()), F.normalize(self.weight.float()))
        if self.subcenters > 1:
            cosine = cosine.view(-1, self.n_classes, self.subcenters).amax(dim=2)
        return cosine

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cosine = self.cosine(embeddings)
        if labels is None:
            return cosine * self.scale
        if self.margins is None:
            margin = self.margin
            cos_m, sin_m = math.cos(margin), math.sin(margin)
            threshold, fallback = math.cos(math.pi - margin), math.sin(math.pi - margin) * margin
        else:
            margin = self.margins.to(cosine.device)[labels][:, None]
            cos_m, sin_m = torch.cos(margin), torch.sin(margin)
            threshold, fallback = torch.cos(math.pi - margin), torch.sin(math.pi - margin) * margin
        sine = torch.sqrt((1.0 - cosine.square()).clamp(0.0, 1.0))
        with_margin = cosine * cos_m - sine * sin_m
        if self.easy_margin:
            with_margin = torch.where(cosine > 0, with_margin, cosine)
        else:
            # Beyond theta + m > pi the margin would make the logit grow again; fall back to a linear penalty.
            with_margin = torch.where(cosine > threshold, with_margin, cosine - fallback)
        is_target = F.one_hot(labels, self.n_classes).bool()
        return torch.where(is_target, with_margin, cosine) * self.scale

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self(embeddings, labels).float(), labels)


class SupConHead(nn.Module):
    """Supervised contrastive loss (Khosla et al. 2020): each row is pulled towards the other rows of its class
    in the batch and pushed from the rest, at cosine / temperature.

    It has no class weights to learn, so from random initial weights it learns from the first step, where a
    margin head must first find its class centres; it needs batches that hold several rows of each class (the
    class-balanced sampler). Rows without a positive in the batch only serve as negatives.
    """

    def __init__(self, *, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = temperature

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        normalised = F.normalize(embeddings.float(), dim=1)
        similarities = normalised @ normalised.T / self.temperature
        is_self = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        log_probabilities = similarities.masked_fill(is_self, float("-inf")).log_softmax(dim=1)
        positives = (labels[:, None] == labels[None, :]) & ~is_self
        n_positives = positives.sum(dim=1)
        has_positive = n_positives > 0
        if not has_positive.any():
            return similarities.sum() * 0.0  # keeps the graph: a batch without pairs teaches nothing
        positive_log_probability = log_probabilities.masked_fill(~positives, 0.0).sum(dim=1)
        return -(positive_log_probability[has_positive] / n_positives[has_positive]).mean()


def class_margins(settings, class_sizes: np.ndarray, epoch: int) -> np.ndarray:
    """Return each class's margin at `epoch`: the warm-up schedule's, per class by size with dynamic margins."""
    margin = settings.margin_at(epoch)
    if settings.dynamic_margin is None:
        return np.full(len(class_sizes), margin, dtype=np.float32)
    rule = settings.dynamic_margin
    per_class = rule.a * np.maximum(class_sizes, 1).astype(np.float64) ** (-rule.power) + rule.b
    return (per_class * margin / settings.margin).astype(np.float32)


def create_head(settings, embedding_dim: int, n_classes: int) -> ArcMarginHead | SupConHead:
    """Return the head described by a config's HeadSettings."""
    if settings.type == "supcon":
        return SupConHead(temperature=settings.temperature)
    return ArcMarginHead(
        embedding_dim,
        n_classes,
        scale=settings.scale,
        margin=settings.margin,
        easy_margin=settings.easy_margin,
        subcenters=settings.subcenters if settings.type == "subcenter_arcface" else 1,
    )
