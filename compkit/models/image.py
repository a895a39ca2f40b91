"""Image embedders: a timm backbone by name, GeM or average pooling, and a linear + BatchNorm neck."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from compkit.errors import BackendUnavailable, ConfigError


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
    offset cannot dominate the normalised embedding.
    """

    def __init__(self, backbone: nn.Module, *, embedding_dim: int, pooling: str, image_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.gem = GeM() if pooling == "gem" else None
        self.neck = _bn_neck(self._pooled_width(image_size), embedding_dim)

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
        return self.neck(self._pool(self.backbone.forward_features(images)))


def _bn_neck(in_features: int, embedding_dim: int) -> nn.Sequential:
    norm = nn.BatchNorm1d(embedding_dim)
    norm.bias.requires_grad_(False)
    return nn.Sequential(nn.Linear(in_features, embedding_dim, bias=False), norm)


def create_backbone(name: str, *, pretrained: bool, pretrained_path: str | None) -> nn.Module:
    """Return a timm backbone without classifier; weights from the hub, a local file, or random."""
    import timm

    if not timm.is_model(name):
        raise ConfigError(f"unknown timm backbone {name!r} (see timm.list_models())")
    if pretrained_path:
        path = Path(pretrained_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"pretrained_path {str(path)!r} for backbone {name!r} is not a file")
        return timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": str(path)})
    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=0)
    try:
        return timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as error:  # the hub raises many kinds of errors when offline
        raise BackendUnavailable(
            f"could not download pretrained weights for {name!r} ({type(error).__name__}); offline, set "
            f"pretrained_path = '/path/to/weights.safetensors' (e.g. from a Kaggle dataset) or pretrained = false"
        ) from None


def image_transforms(backbone: nn.Module, image_size: int):
    """Return (train, eval) transforms from the backbone's own pretrained config (mean, std, interpolation)."""
    from timm.data import create_transform, resolve_model_data_config

    data_config = resolve_model_data_config(backbone)
    data_config["input_size"] = (3, image_size, image_size)
    data_config["crop_pct"] = 1.0
    train = create_transform(
        **data_config, is_training=True, scale=(0.6, 1.0), hflip=0.5, color_jitter=0.2, re_prob=0.0
    )
    evaluate = create_transform(**data_config, is_training=False)
    return train, evaluate, data_config
