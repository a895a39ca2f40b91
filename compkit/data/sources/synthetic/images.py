"""Shared pieces of the synthetic demo competitions: ids, heavy-tailed counts, textures, photo effects, JPEG."""

from __future__ import annotations

import colorsys
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from compkit.errors import ConfigError
from compkit.models.phash import phash_hex

RGB = tuple[int, int, int]

SUPERSAMPLING = 2  # scenes are drawn at twice the output size, then cropped and downsampled like a photo


def check_sizes(*, n_train_groups: int, n_test_groups: int, image_size: int) -> None:
    """Raise ConfigError unless the requested demo is big enough to have the competition's shape."""
    if n_train_groups < 2:
        raise ConfigError(f"synthetic data needs n_train_groups >= 2, got n_train_groups={n_train_groups}")
    if n_test_groups < 1:
        raise ConfigError(f"synthetic data needs n_test_groups >= 1, got n_test_groups={n_test_groups}")
    if image_size < 32:
        raise ConfigError(f"synthetic images need image_size >= 32 pixels, got image_size={image_size}")


def heavy_tailed_counts(rng: np.random.Generator, count: int, *, low: int, high: int, exponent: float) -> np.ndarray:
    """Return ``count`` integers in [low, high] drawn with P(k) proportional to k ** -exponent."""
    values = np.arange(low, high + 1)
    weights = values.astype(np.float64) ** -exponent
    return rng.choice(values, size=count, p=weights / weights.sum())


def unique_hex_ids(rng: np.random.Generator, count: int, *, n_chars: int, taken: set[str] | None = None) -> list[str]:
    """Return ``count`` distinct random lowercase hex strings of ``n_chars`` characters, none of them in ``taken``."""
    taken = set() if taken is None else taken
    ids: list[str] = []
    while len(ids) < count:
        candidate = rng.bytes((n_chars + 1) // 2).hex()[:n_chars]
        if candidate not in taken:
            taken.add(candidate)
            ids.append(candidate)
    return ids


def unique_integers(rng: np.random.Generator, count: int, *, low: int, high: int) -> list[int]:
    """Return ``count`` distinct random integers in [low, high)."""
    values: dict[int, None] = {}
    while len(values) < count:
        values.setdefault(int(rng.integers(low, high)))
    return list(values)


def hsv(hue_degrees: float, saturation: float, value: float) -> RGB:
    """Return the 8-bit RGB colour of a hue in degrees and a saturation and value in [0, 1]."""
    red, green, blue = colorsys.hsv_to_rgb((hue_degrees % 360) / 360, min(max(saturation, 0), 1), min(max(value, 0), 1))
    return round(red * 255), round(green * 255), round(blue * 255)


def upsample_grid(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Return a smooth (height, width, channels) float32 field in [0, 1], bicubically upsampled from a coarse grid."""
    grid = grid.reshape(grid.shape[0], grid.shape[1], -1)
    coarse = (np.clip(grid, 0, 1) * 255).round().astype(np.uint8)
    channels = [coarse[:, :, c : c + 3] for c in range(0, coarse.shape[2], 3)]  # at most 3 per 8-bit image
    fields = []
    for chunk in channels:
        padded = np.concatenate([chunk, np.zeros((*chunk.shape[:2], 3 - chunk.shape[2]), np.uint8)], axis=2)
        smooth = Image.fromarray(padded).resize((width, height), Image.Resampling.BICUBIC)
        fields.append(np.asarray(smooth, dtype=np.float32)[:, :, : chunk.shape[2]])
    return np.concatenate(fields, axis=2) / 255


def smooth_noise(rng: np.random.Generator, height: int, width: int, *, cells: int, channels: int = 1) -> np.ndarray:
    """Return a random smooth field in roughly [0, 1], shape (height, width, channels), with ``cells`` blobs across."""
    return upsample_grid(rng.random((cells, cells, channels)), height, width)


def gradient(height: int, width: int, top: RGB, bottom: RGB) -> np.ndarray:
    """Return a (height, width, 3) float32 vertical gradient from ``top`` to ``bottom``."""
    weights = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    column = (1 - weights) * np.asarray(top, np.float32) + weights * np.asarray(bottom, np.float32)
    return np.broadcast_to(column, (height, width, 3)).copy()


def to_image(pixels: np.ndarray) -> Image.Image:
    """Return an RGB image of a float array, clipped to [0, 255]."""
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def transform_sprite(
    sprite: Image.Image, *, height: int, width_scale: float = 1.0, angle: float = 0.0, mirror: bool = False
) -> Image.Image:
    """Return the RGBA sprite resized to ``height`` pixels (width stretched by ``width_scale``), mirrored, rotated."""
    width = max(2, round(sprite.width * height / sprite.height * width_scale))
    sprite = sprite.resize((width, max(2, height)), Image.Resampling.BILINEAR, reducing_gap=2.0)
    if mirror:
        sprite = sprite.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if abs(angle) >= 0.5:
        sprite = sprite.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    return sprite


def photo_finish(
    canvas: Image.Image, rng: np.random.Generator, *, out_size: int, min_crop_area: float = 0.6, jitter: float = 1.0
) -> Image.Image:
    """Return the scene as a phone photo: random resized crop, focus blur, exposure and colour jitter, sensor noise."""
    side = canvas.width
    area = rng.uniform(min_crop_area, 1.0) * side * side
    aspect = np.exp(rng.uniform(np.log(0.8), np.log(1.25)))
    crop_width = min(side, np.sqrt(area * aspect))
    crop_height = min(side, np.sqrt(area / aspect))
    left = rng.uniform(0, side - crop_width)
    top = rng.uniform(0, side - crop_height)
    photo = canvas.resize(
        (out_size, out_size), Image.Resampling.LANCZOS, box=(left, top, left + crop_width, top + crop_height)
    )
    if rng.random() < 0.25:
        photo = photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9) * out_size / 64))
    pixels = np.asarray(photo, dtype=np.float32)
    grey = pixels.mean(axis=2, keepdims=True)
    pixels = grey + (pixels - grey) * (1 + jitter * rng.uniform(-0.45, 0.3))
    mean = pixels.mean()
    pixels = (pixels - mean) * (1 + jitter * rng.uniform(-0.3, 0.25)) + mean
    pixels = pixels * (1 + jitter * rng.uniform(-0.25, 0.2)) * (1 + jitter * rng.uniform(-0.08, 0.08, size=3))
    pixels = 255 * (np.clip(pixels, 0, 255) / 255) ** np.exp(jitter * rng.uniform(-0.25, 0.25))
    pixels += rng.normal(0.0, rng.uniform(0.5, 5.0), size=pixels.shape).astype(np.float32)
    return to_image(pixels)


def encode_jpeg(image: Image.Image, *, quality: int) -> bytes:
    """Return the image encoded as a baseline JPEG (deterministic for a given Pillow)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_jpeg(folder: Path, name: str, data: bytes) -> str:
    """Write the JPEG bytes to ``folder/name`` and return the pHash of the image as decoded from those bytes."""
    (folder / name).write_bytes(data)
    with Image.open(io.BytesIO(data)) as decoded:
        return phash_hex(decoded)
