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

from compkit.config import Columns, ImageModel, TextModel, is_zero_shot
from compkit.errors import DataError
from compkit.models.augment import BatchAugment

DECODED_CACHE_BYTES = 1 << 30


class DecodedImages:
    """Decoded RGB images by path index as (H, W, 3) uint8 arrays, kept in memory up to `budget` bytes (then
    decoded on every read); `image(index)` is the same picture as a PIL image.

    Decoding a JPEG costs as much as augmenting it: over the epochs of a small dataset the cache takes that
    cost once. Each DataLoader worker process fills its own copy.
    """

    def __init__(self, paths: list[Path], budget: int = DECODED_CACHE_BYTES) -> None:
        self.paths, self.budget = paths, budget
        self.images: dict[int, np.ndarray] = {}
        self.size = 0

    def __getitem__(self, index: int) -> np.ndarray:
        pixels = self.images.get(index)
        if pixels is not None:
            return pixels
        path = self.paths[index]
        try:
            with Image.open(path) as opened:
                pixels = np.array(opened.convert("RGB"))
        except (OSError, ValueError) as error:
            raise DataError(f"{path}: cannot read image ({error})") from None
        if self.size + pixels.nbytes <= self.budget:
            self.images[index] = pixels
            self.size += pixels.nbytes
        return pixels

    def image(self, index: int) -> Image.Image:
        return Image.fromarray(self[index])


class ImageRows(Dataset):
    """Images of selected rows through a per-image `transform` (evaluation), with their labels (-1 when
    unknown); decoded lazily, at most once when they fit."""

    def __init__(self, images: DecodedImages, rows: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images, self.rows, self.labels, self.transform = images, rows, labels, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, position: int):
        return self.transform(self.images.image(int(self.rows[position]))), int(self.labels[position])


class AugmentedImageRows(Dataset):
    """Training rows read a batch at a time by (augmentation seed, position) keys: each row's crop drawn from
    its seed, the rest of `augment` applied to the whole batch (compkit.models.augment)."""

    def __init__(self, images: DecodedImages, rows: np.ndarray, labels: np.ndarray, augment: BatchAugment) -> None:
        self.images, self.rows, self.labels, self.augment = images, rows, labels, augment

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, int]):
        images, labels = self.__getitems__([key])
        return images[0], labels[0]

    def __getitems__(self, keys: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.augment.image_size
        crops = torch.empty(len(keys), 3, size, size, dtype=torch.uint8)
        draws = []
        for slot, (seed, position) in enumerate(keys):
            pixels = self.images[int(self.rows[position])]
            draws.append(self.augment.draw(seed, pixels.shape[0], pixels.shape[1]))
            crops[slot] = self.augment.crop(pixels, draws[-1])
        positions = np.fromiter((position for _, position in keys), dtype=np.int64, count=len(keys))
        return self.augment.finish(crops, draws), torch.from_numpy(self.labels[positions].astype(np.int64))

    @staticmethod
    def collate(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The DataLoader's collate_fn: `__getitems__` returns the batch already made."""
        return batch


class TokenRows(Dataset):
    """Pre-tokenised texts of selected rows with their labels."""

    def __init__(self, tokens: dict[str, torch.Tensor], rows: np.ndarray, labels: np.ndarray) -> None:
        self.tokens, self.rows, self.labels = tokens, rows, labels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | tuple[int, int]):
        position = key[1] if isinstance(key, tuple) else key
        row = int(self.rows[position])
        return {name: values[row] for name, values in self.tokens.items()}, int(self.labels[position])


@dataclass
class ImageInputs:
    paths: list[Path]
    train_augment: BatchAugment
    eval_transform: Any
    images: DecodedImages = field(init=False)

    def __post_init__(self) -> None:
        self.images = DecodedImages(self.paths)

    def dataset(self, rows: np.ndarray, labels: np.ndarray, *, train: bool) -> Dataset:
        if train:
            return AugmentedImageRows(self.images, rows, labels, self.train_augment)
        return ImageRows(self.images, rows, labels, self.eval_transform)


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
    train_augment, eval_transform, data_config = image_transforms(backbone, model.image_size, model.augment)
    embedder = ImageEmbedder(
        backbone, embedding_dim=model.embedding_dim, pooling=model.pooling, image_size=model.image_size,
        neck=not is_zero_shot(model), flip_tta="flip" in model.tta,
    )

    def make_inputs(frame: pd.DataFrame, images_dir: Path) -> ImageInputs:
        paths = [images_dir / name for name in frame[columns.image]]
        return ImageInputs(paths, train_augment, eval_transform)

    return EmbedderBuild(embedder, {"data_config": data_config, "backbone": model.backbone}, make_inputs)


def _build_text(model: TextModel, columns: Columns) -> EmbedderBuild:
    from compkit.models.text import TextEmbedder, load_encoder, resolve_encoder, tokenize

    encoder, tokenizer = load_encoder(model.encoder)
    embedder = TextEmbedder(encoder, embedding_dim=model.embedding_dim, neck=not is_zero_shot(model))

    def make_inputs(frame: pd.DataFrame, images_dir: Path) -> TextInputs:
        texts = frame[columns.text].astype(str).tolist()
        return TextInputs(tokenize(tokenizer, texts, max_length=model.max_length))

    resolved = {"encoder": resolve_encoder(model.encoder), "max_length": model.max_length}
    return EmbedderBuild(embedder, resolved, make_inputs)
