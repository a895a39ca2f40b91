import numpy as np
import pytest
from PIL import Image

from compkit.errors import DataError
from compkit.models.factory import DecodedImages, ImageRows


def _images(tmp_path, count, size=8):
    paths = []
    for index in range(count):
        path = tmp_path / f"{index}.png"
        Image.new("RGB", (size, size), (index, 0, 0)).save(path)
        paths.append(path)
    return paths


def test_decoded_images_are_kept_up_to_the_budget_and_read_from_disk_beyond(tmp_path):
    paths = _images(tmp_path, 4)
    images = DecodedImages(paths, budget=2 * 8 * 8 * 3)
    first = [images[index] for index in range(4)]
    assert sorted(images.images) == [0, 1] and images.size == 2 * 8 * 8 * 3
    paths[0].unlink()
    paths[3].unlink()
    assert images[0] is first[0] and images.image(0).getpixel((0, 0)) == (0, 0, 0)  # cached: never read again
    with pytest.raises(DataError, match=r"3\.png: cannot read image"):
        images[3]


def test_rows_apply_the_transform_to_the_decoded_image_with_its_label(tmp_path):
    images = DecodedImages(_images(tmp_path, 3))
    rows = ImageRows(images, np.array([2, 0]), np.array([7, -1]), transform=lambda image: image.getpixel((0, 0)))
    assert [rows[0], rows[1]] == [((2, 0, 0), 7), ((0, 0, 0), -1)]


def test_an_unreadable_image_names_its_file(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="broken.jpg: cannot read image"):
        DecodedImages([path])[0]
