"""Batch samplers for metric learning: class-balanced (P classes x K images) batches."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from compkit.errors import ConfigError


class ClassBalancedBatchSampler(Sampler[list[int]]):
    """Yield batches of `batch_size // images_per_class` classes with `images_per_class` positions each.

    With 2-3 images per class, a shuffled batch of 64 rarely holds two images of one class, so a margin or
    pair loss sees almost no positives; this sampler guarantees them. Classes with fewer images than
    `images_per_class` repeat theirs (each repeat is augmented differently, a positive pair in its own right).
    Every class is visited once per pass, in an order drawn from `generator`, so a seeded epoch replays exactly.
    """

    def __init__(
        self, labels: np.ndarray, *, batch_size: int, images_per_class: int, generator: torch.Generator
    ) -> None:
        if images_per_class < 1 or batch_size < images_per_class:
            raise ConfigError(
                f"class_balanced sampler needs 1 <= images_per_class <= batch_size, got "
                f"images_per_class={images_per_class}, batch_size={batch_size}"
            )
        labels = np.asarray(labels)
        order = np.argsort(labels, kind="stable")
        classes, starts = np.unique(labels[order], return_index=True)
        self.members = np.split(order, starts[1:])
        self.classes_per_batch = batch_size // images_per_class
        self.images_per_class = images_per_class
        self.n_batches = max(1, len(labels) // batch_size)
        self.generator = generator

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[list[int]]:
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        rng = np.random.default_rng(seed)
        queue: list[int] = []
        for _ in range(self.n_batches):
            while len(queue) < self.classes_per_batch:
                queue.extend(rng.permutation(len(self.members)).tolist())
            chosen, queue = queue[: self.classes_per_batch], queue[self.classes_per_batch :]
            batch = []
            for index in chosen:
                members = self.members[index]
                replace = len(members) < self.images_per_class
                batch.extend(rng.choice(members, self.images_per_class, replace=replace).tolist())
            yield batch
