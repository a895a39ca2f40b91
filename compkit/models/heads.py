"""Margin heads for metric learning: ArcFace and sub-center ArcFace (one module, k sub-centres)."""

from __future__ import annotations

import math

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
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        # Beyond theta + m > pi the margin would make the logit grow again; fall back to a linear penalty.
        self.threshold = math.cos(math.pi - margin)
        self.fallback = math.sin(math.pi - margin) * margin

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        cosine = F.linear(F.normalize(embeddings.float()), F.normalize(self.weight.float()))
        if self.subcenters > 1:
            cosine = cosine.view(-1, self.n_classes, self.subcenters).amax(dim=2)
        return cosine

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cosine = self.cosine(embeddings)
        if labels is None:
            return cosine * self.scale
        sine = torch.sqrt((1.0 - cosine.square()).clamp(0.0, 1.0))
        with_margin = cosine * self.cos_m - sine * self.sin_m
        if self.easy_margin:
            with_margin = torch.where(cosine > 0, with_margin, cosine)
        else:
            with_margin = torch.where(cosine > self.threshold, with_margin, cosine - self.fallback)
        is_target = F.one_hot(labels, self.n_classes).bool()
        return torch.where(is_target, with_margin, cosine) * self.scale


def create_head(settings, embedding_dim: int, n_classes: int) -> ArcMarginHead:
    """Return the margin head described by a config's HeadSettings."""
    return ArcMarginHead(
        embedding_dim,
        n_classes,
        scale=settings.scale,
        margin=settings.margin,
        easy_margin=settings.easy_margin,
        subcenters=settings.subcenters if settings.type == "subcenter_arcface" else 1,
    )
