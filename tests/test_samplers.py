"""The class-balanced batch sampler: positives in every batch, and seeded replay for resumed epochs."""

import dataclasses

import numpy as np
import pytest
import torch

from compkit.config import TrainSettings, load_config
from compkit.errors import ConfigError
from compkit.training.rows import model_inputs
from compkit.training.samplers import ClassBalancedBatchSampler
from compkit.training.steps import loader_workers


def batches(labels, seed, **kwargs):
    sampler = ClassBalancedBatchSampler(labels, generator=torch.Generator().manual_seed(seed), **kwargs)
    return list(sampler)


def test_every_batch_holds_images_per_class_images_of_each_of_its_classes():
    labels = np.repeat(np.arange(40), 3)
    for batch in batches(labels, 0, batch_size=16, images_per_class=2):
        assert len(batch) == 16
        _, counts = np.unique(labels[batch], return_counts=True)
        assert set(counts) <= {2, 4}  # 4 only where a class ends one pass and starts the next


def test_one_epoch_has_as_many_batches_as_shuffling_would():
    labels = np.repeat(np.arange(40), 3)
    assert len(batches(labels, 0, batch_size=16, images_per_class=2)) == len(labels) // 16


def test_singleton_classes_repeat_their_image():
    labels = np.arange(32)
    for batch in batches(labels, 0, batch_size=8, images_per_class=2):
        assert len(set(batch)) == 4


def test_same_seed_replays_the_same_batches_and_another_seed_does_not():
    labels = np.repeat(np.arange(50), 2)
    first = batches(labels, 7, batch_size=10, images_per_class=2)
    assert batches(labels, 7, batch_size=10, images_per_class=2) == first
    assert batches(labels, 8, batch_size=10, images_per_class=2) != first


def test_images_per_class_above_batch_size_is_rejected():
    with pytest.raises(ConfigError, match="images_per_class"):
        batches(np.arange(10), 0, batch_size=4, images_per_class=8)


def _epoch_tensors(loader, epoch: int):
    return [(images.clone(), labels.clone()) for images, labels in loader.epoch(epoch)]


def test_epoch_loader_replays_an_epoch_exactly_with_any_number_of_workers(tmp_path):
    from PIL import Image

    from compkit.config import AugmentSettings, TrainSettings
    from compkit.models.augment import BatchAugment
    from compkit.models.factory import AugmentedImageRows, DecodedImages
    from compkit.training.steps import EpochLoader

    paths = []
    for index in range(24):
        path = tmp_path / f"{index}.png"
        Image.fromarray(np.random.default_rng(index).integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    labels = np.arange(24) % 6
    augment = BatchAugment(12, AugmentSettings(crop_scale=(0.3, 1.0), color_jitter=0.4, rotation=10.0),
                           mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    dataset = AugmentedImageRows(DecodedImages(paths), np.arange(24), labels, augment)
    runs = {}
    for workers in (0, 2):
        settings = TrainSettings(batch_size=8, sampler="class_balanced", images_per_class=2, num_workers=workers)
        loader = EpochLoader(dataset, labels, settings, seed=3, device=torch.device("cpu"))
        runs[workers] = [_epoch_tensors(loader, epoch) for epoch in (0, 1, 0)]
    for first, second in zip(runs[0], runs[2], strict=True):
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second, strict=True))
    epoch0, epoch1, epoch0_again = runs[0]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(epoch0, epoch0_again, strict=True))
    assert not torch.equal(epoch0[0][0], epoch1[0][0])


def test_epoch_batches_shuffle_every_row_once_per_epoch():
    from compkit.config import TrainSettings
    from compkit.training.steps import EpochBatches

    batches = EpochBatches(np.zeros(50, dtype=int), TrainSettings(batch_size=10, sampler="random"), seed=1)
    rows = [row for batch in batches for _, row in batch]
    assert len(batches) == 5 and sorted(rows) == list(range(50))
    batches.set_epoch(1)
    assert [row for batch in batches for _, row in batch] != rows


def test_loader_workers_default_to_the_machine_on_cuda_and_none_on_cpu(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    assert loader_workers(TrainSettings(), torch.device("cuda")) == 3  # a Kaggle notebook's 4 cores
    assert loader_workers(TrainSettings(), torch.device("cpu")) == 0
    assert loader_workers(TrainSettings(num_workers=2), torch.device("cuda")) == 2


def test_num_workers_enters_no_fingerprint_and_keeps_the_fingerprints_it_had():
    model = load_config("demo-match").model("lite0-arcface")
    workers = dataclasses.replace(model, train=dataclasses.replace(model.train, num_workers=5))
    assert model_inputs(model) == model_inputs(workers)
    assert model_inputs(model)["train"]["num_workers"] == 0  # as every fingerprint recorded it before
