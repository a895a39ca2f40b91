"""Image embedders: a timm backbone by name, GeM or average pooling, and a linear + BatchNorm neck."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compkit.config import AugmentSettings
from compkit.errors import ConfigError
from compkit.models.augment import BatchAugment
from compkit.models.pretrained import hub_backbone, load_backbone_weights


class GeM(nn.Module):
    """Generalised-mean pooling (Radenović et al.) with a learnable exponent p."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(p))
        self.eps = eps

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(features.clamp(min=self.eps).pow(self.p), features.shape[-2:])
        return pooled.pow(1.0 / self.p).flatten(1)


class ImageEmbedder(nn.Module):
    """Return un-normalised embeddings of shape (batch, embedding_dim) for a batch of images.

    Feature maps are pooled here (GeM or average); backbones without a spatial map (ViTs) use their own
    pre-logits pooling. The neck is linear + BatchNorm with a frozen zero bias (re-ID's BNNeck), so a learnt
    offset cannot dominate the normalised embedding. Without a neck (`neck=False`, a zero-shot model) the
    embedding is the pooled backbone features themselves. With `flip_tta`, an evaluation embeds each image
    and its mirror and returns the sum of their unit embeddings (its direction is their mean's).
    """

    def __init__(
        self, backbone: nn.Module, *, embedding_dim: int, pooling: str, image_size: int, neck: bool = True,
        flip_tta: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.flip_tta = flip_tta
        self.pooling = pooling
        self.gem = GeM() if pooling == "gem" else None
        self.neck = _bn_neck(self._pooled_width(image_size), embedding_dim) if neck else nn.Identity()

    @torch.no_grad()
    def _pooled_width(self, image_size: int) -> int:
        was_training = self.backbone.training
        self.backbone.eval()
        width = self._pool(self.backbone.forward_features(torch.zeros(1, 3, image_size, image_size))).shape[1]
        self.backbone.train(was_training)
        return width

    def _pool(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 4:
            return self.backbone.forward_head(features, pre_logits=True)
        if self.gem is not None:
            return self.gem(features)
        return features.mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        embeddings = self.neck(self._pool(self.backbone.forward_features(images)))
        if self.flip_tta and not self.training:  # the mean of the image's and its mirror's unit embeddings
            mirrored = self.neck(self._pool(self.backbone.forward_features(images.flip(-1))))
            return F.normalize(embeddings.float(), dim=1) + F.normalize(mirrored.float(), dim=1)
        return embeddings


def _bn_neck(in_features: int, embedding_dim: int) -> nn.Sequential:
    norm = nn.BatchNorm1d(embedding_dim)
    norm.bias.requires_grad_(False)
    return nn.Sequential(nn.Linear(in_features, embedding_dim, bias=False), norm)


def create_backbone(name: str, *, pretrained: bool, pretrained_path: str | None) -> nn.Module:
    """Return a timm backbone without classifier; weights from a file or package (strictly), the hub, or random.

    `pretrained_path` (a weights file or `package:NAME`) wins over `pretrained`; see compkit.models.pretrained.
    """
    import timm

    if not timm.is_model(name):
        raise ConfigError(f"unknown timm backbone {name!r} (see timm.list_models())")
    if pretrained_path:
        backbone = timm.create_model(name, pretrained=False, num_classes=0)
        load_backbone_weights(backbone, pretrained_path, name=name)
        return backbone
    if pretrained:
        return hub_backbone(name)
    return timm.create_model(name, pretrained=False, num_classes=0)


def image_transforms(backbone: nn.Module, image_size: int, augment: AugmentSettings):
    """Return (training augmentation, evaluation transform, data config) from the backbone's own pretrained
    config (mean, std, interpolation).

    Training is compkit.models.augment's batched random-resized crop, flip, rotation and colour jitter as
    `augment` sets them; evaluation is timm's resize and centre crop of the whole image.
    """
    from timm.data import create_transform, resolve_model_data_config

    data_config = resolve_model_data_config(backbone)
    data_config["input_size"] = (3, image_size, image_size)
    data_config["crop_pct"] = 1.0
    interpolation = "bicubic" if data_config.get("interpolation") == "bicubic" else "bilinear"
    train = BatchAugment(image_size, augment, mean=tuple(data_config["mean"]), std=tuple(data_config["std"]),
                         interpolation=interpolation)
    evaluate = create_transform(**data_config, is_training=False)
    return train, evaluate, data_config
