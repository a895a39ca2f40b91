"""The class-balanced batch sampler: positives in every batch, and seeded replay for resumed epochs."""

import numpy as np
import pytest
import torch

from compkit.errors import ConfigError
from compkit.training.samplers import ClassBalancedBatchSampler


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
