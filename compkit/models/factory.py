"""Build a trainable embedder and its input pipeline from a model's config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from compkit.config import Columns, ImageModel, TextModel
from compkit.errors import DataError


class ImageRows(Dataset):
    """Images of selected rows with their labels (-1 when unknown), loaded lazily from disk."""

    def __init__(self, paths: list[Path], rows: np.ndarray, labels: np.ndarray, transform) -> None:
        self.paths, self.rows, self.labels, self.transform = paths, rows, labels, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, position: int):
        path = self.paths[self.rows[position]]
        try:
            with Image.open(path) as image:
                pixels = self.transform(image.convert("RGB"))
        except (OSError, ValueError) as error:
            raise DataError(f"{path}: cannot read image ({error})") from None
        return pixels, int(self.labels[position])


class TokenRows(Dataset):
    """Pre-tokenised texts of selected rows with their labels."""

    def __init__(self, tokens: dict[str, torch.Tensor], rows: np.ndarray, labels: np.ndarray) -> None:
        self.tokens, self.rows, self.labels = tokens, rows, labels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, position: int):
        row = int(self.rows[position])
        return {name: values[row] for name, values in self.tokens.items()}, int(self.labels[position])


@dataclass
class ImageInputs:
    paths: list[Path]
    train_transform: Any
    eval_transform: Any

    def dataset(self, rows: np.ndarray, labels: np.ndarray, *, train: bool) -> Dataset:
        return ImageRows(self.paths, rows, labels, self.train_transform if train else self.eval_transform)


@dataclass
class TextInputs:
    tokens: dict[str, torch.Tensor]

    def dataset(self, rows: np.ndarray, labels: np.ndarray, *, train: bool) -> Dataset:
        return TokenRows(self.tokens, rows, labels)


@dataclass
class EmbedderBuild:
    """A fresh embedder plus what turns a table into its inputs; `resolved` is written next to each run."""

    embedder: nn.Module
    resolved: dict = field(default_factory=dict)
    _make_inputs: Any = None

    def inputs(self, frame: pd.DataFrame, images_dir: Path) -> ImageInputs | TextInputs:
        return self._make_inputs(frame, images_dir)


def build_embedder(model: ImageModel | TextModel, columns: Columns) -> EmbedderBuild:
    """Return a new embedder for `model` and the input pipeline that feeds it."""
    if model.kind == "image":
        return _build_image(model, columns)
    return _build_text(model, columns)


def _build_image(model: ImageModel, columns: Columns) -> EmbedderBuild:
    from compkit.models.image import ImageEmbedder, create_backbone, image_transforms

    backbone = create_backbone(model.backbone, pretrained=model.pretrained, pretrained_path=model.pretrained_path)
    train_transform, eval_transform, data_config = image_transforms(backbone, model.image_size)
    embedder = ImageEmbedder(
        backbone, embedding_dim=model.embedding_dim, pooling=model.pooling, image_size=model.image_size
    )

    def make_inputs(frame: pd.DataFrame, images_dir: Path) -> ImageInputs:
        paths = [images_dir / name for name in frame[columns.image]]
        return ImageInputs(paths, train_transform, eval_transform)

    return EmbedderBuild(embedder, {"data_config": data_config, "backbone": model.backbone}, make_inputs)


def _build_text(model: TextModel, columns: Columns) -> EmbedderBuild:
    from compkit.models.text import TextEmbedder, load_encoder, resolve_encoder, tokenize

    encoder, tokenizer = load_encoder(model.encoder)
    embedder = TextEmbedder(encoder, embedding_dim=model.embedding_dim)

    def make_inputs(frame: pd.DataFrame, images_dir: Path) -> TextInputs:
        texts = frame[columns.text].astype(str).tolist()
        return TextInputs(tokenize(tokenizer, texts, max_length=model.max_length))

    resolved = {"encoder": resolve_encoder(model.encoder), "max_length": model.max_length}
    return EmbedderBuild(embedder, resolved, make_inputs)
