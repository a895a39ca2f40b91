"""Training augmentation of a whole batch: each row's crop and flip, then colour, rotation and normalisation at once.

timm's per-image transform (PIL colour jitter, crop, ToTensor, Normalize) cost a 64 px model as much time as a
third of its training step. Here a row costs one uint8 resize: its random-resized crop (timm's and
torchvision's parameter rule) and mirror are drawn from the row's own seed, so an epoch replays exactly with
any number of loader workers. The batch then goes to float once, is rotated by one `grid_sample` when
`rotation` > 0, and takes brightness, contrast, saturation and the backbone's normalisation as one colour
matrix per row (`baddbmm`), clamped once to the valid range. Without intermediate clamps the three jitters are
linear and commute, so their order does not matter (torchvision draws one per image).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from compkit.config import AugmentSettings

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale
ASPECT_RATIOS = (3 / 4, 4 / 3)


@dataclass(frozen=True)
class RowDraw:
    """One row's random augmentation: crop box (top, left, height, width), mirror, colour factors, angle."""

    top: int
    left: int
    height: int
    width: int
    flip: bool
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    angle: float = 0.0


@dataclass(frozen=True)
class BatchAugment:
    """The training augmentation of `augment`'s settings at `image_size`, normalised by `mean` and `std`.

    `draw(seed, height, width)` picks a row's parameters, `crop(image, draw)` cuts and resizes its uint8
    image, `finish(batch, draws)` turns the stacked crops into the float batch the model trains on.
    """

    image_size: int
    augment: AugmentSettings
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def draw(self, seed: int, height: int, width: int) -> RowDraw:
        """Return the augmentation of a `height` x `width` image drawn from `seed` alone."""
        rng = random.Random(seed)
        top, left, crop_height, crop_width = _crop_box(rng, height, width, self.augment.crop_scale)
        flip = rng.random() < self.augment.hflip
        strength = self.augment.color_jitter
        factors = [rng.uniform(max(0.0, 1.0 - strength), 1.0 + strength) if strength > 0 else 1.0 for _ in range(3)]
        angle = rng.uniform(-self.augment.rotation, self.augment.rotation) if self.augment.rotation > 0 else 0.0
        return RowDraw(top, left, crop_height, crop_width, flip, *factors, angle)

    def crop(self, image: np.ndarray, draw: RowDraw) -> torch.Tensor:
        """Return the (3, image_size, image_size) uint8 crop of an (H, W, 3) uint8 image, mirrored if drawn."""
        pixels = torch.from_numpy(image).permute(2, 0, 1)  # channels-last in memory: torch's uint8 resize path
        box = pixels[:, draw.top:draw.top + draw.height, draw.left:draw.left + draw.width]
        size = (self.image_size, self.image_size)
        resized = F.interpolate(box.unsqueeze(0), size=size, mode=self.interpolation, antialias=True)[0]
        return resized.flip(-1) if draw.flip else resized

    def finish(self, crops: torch.Tensor, draws: list[RowDraw]) -> torch.Tensor:
        """Return the normalised float batch of (B, 3, S, S) uint8 `crops`: rotated, colour-jittered."""
        images = crops.float()
        if self.augment.rotation > 0:
            images = _rotate(images, torch.tensor([draw.angle for draw in draws]))
        matrix, offset = self._colour_transform(images, draws)
        batch, channels, height, width = images.shape
        flat = torch.baddbmm(offset.unsqueeze(2), matrix, images.view(batch, channels, height * width))
        for channel, (mean, std) in enumerate(zip(self.mean, self.std, strict=True)):  # scalar bounds: 7x faster
            flat[:, channel].clamp_(-mean / std, (1.0 - mean) / std)
        return flat.view(batch, channels, height, width)

    def _colour_transform(self, images: torch.Tensor, draws: list[RowDraw]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return per-row (3x3 matrix, offset) taking 0-255 pixels to normalised, colour-jittered values.

        Brightness b scales, contrast c blends with the image's mean gray m, saturation s blends each pixel
        with its gray: b * c * (s * I + (1 - s) * 1 w^T) x + b * (1 - c) * m * 1, then (x / 255 - mean) / std.
        """
        batch = len(images)
        gray = torch.tensor(GRAY_WEIGHTS)
        factors = torch.tensor([[d.brightness, d.contrast, d.saturation] for d in draws], dtype=torch.float32)
        brightness, contrast, saturation = factors.unbind(1)
        identity = torch.eye(3).expand(batch, 3, 3)
        to_gray = torch.ones(3, 1) * gray.view(1, 3)  # 1 w^T
        saturate = saturation.view(-1, 1, 1) * identity + (1 - saturation).view(-1, 1, 1) * to_gray
        matrix = (brightness * contrast).view(-1, 1, 1) * saturate
        mean_gray = images.flatten(2).mean(2) @ gray if self.augment.color_jitter > 0 else torch.zeros(batch)
        offset = (brightness * (1 - contrast) * mean_gray).view(-1, 1).expand(batch, 3)
        mean, std = torch.tensor(self.mean), torch.tensor(self.std)
        matrix = matrix / (255.0 * std.view(1, 3, 1))
        offset = (offset / 255.0 - mean) / std
        return matrix, offset


def _crop_box(rng: random.Random, height: int, width: int, scale: tuple[float, float]) -> tuple[int, int, int, int]:
    """Return (top, left, height, width) of a random-resized crop: torchvision's RandomResizedCrop.get_params
    rule (ten tries at an area in `scale` and an aspect ratio in 3/4-4/3, then the central crop)."""
    area = height * width
    log_low, log_high = math.log(ASPECT_RATIOS[0]), math.log(ASPECT_RATIOS[1])
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(log_low, log_high))
        crop_width = round(math.sqrt(target_area * aspect))
        crop_height = round(math.sqrt(target_area / aspect))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            return rng.randint(0, height - crop_height), rng.randint(0, width - crop_width), crop_height, crop_width
    ratio = width / height
    if ratio < ASPECT_RATIOS[0]:
        crop_width, crop_height = width, round(width / ASPECT_RATIOS[0])
    elif ratio > ASPECT_RATIOS[1]:
        crop_height, crop_width = height, round(height * ASPECT_RATIOS[1])
    else:
        crop_height, crop_width = height, width
    return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width


def _rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Return `images` each rotated by its angle about its centre, corners filled with black (0)."""
    radians = torch.deg2rad(degrees)
    cos, sin = torch.cos(radians), torch.sin(radians)
    zeros = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
