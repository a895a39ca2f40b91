"""compkit.models.augment: a row's crop and flip from its seed, the batch's colour, rotation and normalisation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import functional as TF

from compkit.config import AugmentSettings
from compkit.models.augment import BatchAugment, RowDraw

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _augment(size=16, **settings) -> BatchAugment:
    return BatchAugment(size, AugmentSettings(**settings), mean=MEAN, std=STD)


def _picture(height=40, width=30, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_a_rows_draw_depends_on_its_seed_alone_and_keeps_the_crop_inside_the_image():
    augment = _augment(crop_scale=(0.3, 1.0), rotation=15.0)
    assert augment.draw(7, 40, 30) == augment.draw(7, 40, 30) != augment.draw(8, 40, 30)
    draws = [augment.draw(seed, 40, 30) for seed in range(500)]
    for draw in draws:
        assert draw.top >= 0 and draw.top + draw.height <= 40 and draw.left >= 0 and draw.left + draw.width <= 30
        assert abs(draw.angle) <= 15.0 and all(0.8 <= f <= 1.2 for f in (draw.brightness, draw.contrast))
    areas = np.array([d.height * d.width for d in draws]) / (40 * 30)
    assert areas.min() >= 0.3 - 0.02 and areas.max() <= 1.0 and areas.std() > 0.1
    flips = np.mean([d.flip for d in draws])
    assert 0.4 < flips < 0.6
    assert not any(_augment(hflip=0.0).draw(seed, 40, 30).flip for seed in range(100))


def test_the_crop_is_the_boxes_antialiased_resize_and_its_mirror():
    picture = _picture()
    augment = _augment()
    box = RowDraw(top=4, left=3, height=30, width=20, flip=False)
    expected = F.interpolate(torch.from_numpy(picture[4:34, 3:23]).permute(2, 0, 1)[None].float(), size=(16, 16),
                             mode="bilinear", antialias=True)[0]
    crop = augment.crop(picture, box)
    assert crop.dtype == torch.uint8 and crop.shape == (3, 16, 16)
    assert (crop.float() - expected).abs().max() <= 1.0  # uint8 rounding
    mirrored = augment.crop(picture, RowDraw(top=4, left=3, height=30, width=20, flip=True))
    assert torch.equal(mirrored, crop.flip(-1))


def test_without_jitter_or_rotation_the_batch_is_the_backbones_normalisation():
    crops = torch.from_numpy(np.stack([_picture(16, 16, seed) for seed in range(4)])).permute(0, 3, 1, 2)
    augment = _augment(color_jitter=0.0)
    draws = [augment.draw(seed, 16, 16) for seed in range(4)]
    expected = TF.normalize(crops.float() / 255, MEAN, STD)
    assert torch.allclose(augment.finish(crops.contiguous(), draws), expected, atol=1e-5)


def test_the_colour_matrix_is_torchvisions_brightness_contrast_and_saturation():
    # mid-range pixels and mild factors: nothing clips, where torchvision clamps after each step
    pixels = torch.from_numpy(np.random.default_rng(1).integers(90, 160, (3, 3, 12, 12), dtype=np.uint8))
    augment = _augment(color_jitter=0.2)
    draws = [RowDraw(0, 0, 12, 12, False, brightness=b, contrast=c, saturation=s)
             for b, c, s in ((1.1, 0.9, 1.2), (0.85, 1.15, 0.8), (1.0, 1.0, 1.0))]
    expected = []
    for image, draw in zip(pixels.float() / 255, draws, strict=True):
        image = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(image, draw.brightness), draw.contrast),
                                     draw.saturation)
        expected.append(TF.normalize(image, MEAN, STD))
    assert torch.allclose(augment.finish(pixels, draws), torch.stack(expected), atol=2e-3)


def test_jittered_values_are_clamped_to_the_images_range():
    white = torch.full((1, 3, 8, 8), 250, dtype=torch.uint8)
    augment = _augment(color_jitter=0.5)
    batch = augment.finish(white, [RowDraw(0, 0, 8, 8, False, brightness=1.5)])
    highest = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(batch.amax(dim=(0, 2, 3)), highest)


def test_rotation_turns_each_row_by_its_own_angle_and_fills_corners_with_black():
    crops = torch.from_numpy(np.stack([_picture(16, 16, seed) for seed in range(2)])).permute(0, 3, 1, 2)
    augment = _augment(color_jitter=0.0, rotation=90.0)
    plain = _augment(color_jitter=0.0).finish(crops.contiguous(), [RowDraw(0, 0, 16, 16, False)] * 2)
    turned = augment.finish(crops.contiguous(), [RowDraw(0, 0, 16, 16, False, angle=90.0),
                                                 RowDraw(0, 0, 16, 16, False, angle=0.0)])
    assert torch.allclose(turned[1], plain[1], atol=1e-4)
    quarter = torch.rot90(plain[0], k=1, dims=(1, 2))
    matches_one_way = torch.allclose(turned[0], quarter, atol=1e-3)
    assert matches_one_way or torch.allclose(turned[0], torch.rot90(plain[0], k=-1, dims=(1, 2)), atol=1e-3)
    tilted = augment.finish(crops.contiguous(), [RowDraw(0, 0, 16, 16, False, angle=45.0)] * 2)
    black = -torch.tensor(MEAN) / torch.tensor(STD)
    assert torch.allclose(tilted[0, :, 0, 0], black, atol=1e-4)  # a corner rotated in from outside the image


@pytest.mark.parametrize("height, width", [(10, 40), (40, 10), (5, 5)])
def test_a_crop_that_never_fits_falls_back_to_the_central_one(height, width):
    draw = _augment(crop_scale=(1.0, 1.0)).draw(0, height, width)
    assert draw.top + draw.height <= height and draw.left + draw.width <= width
    assert 3 / 4 - 0.1 <= draw.width / draw.height <= 4 / 3 + 0.1 or (height, width) == (5, 5)
