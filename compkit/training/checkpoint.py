"""Checkpoints: an atomic resume state after every epoch, and the best weights of the run."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compkit.workspace import atomic_path


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write a torch checkpoint atomically (a kill mid-write leaves the previous one intact)."""
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def load_state(path: Path) -> dict[str, Any] | None:
    """Return a checkpoint's contents, or None when there is none."""
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def seed_epoch(seed: int, epoch: int) -> torch.Generator:
    """Seed every RNG from (seed, epoch) and return the loader's generator, so a resumed epoch replays exactly."""
    epoch_seed = seed * 10_007 + epoch
    random.seed(epoch_seed)
    np.random.seed(epoch_seed % (2**32))
    torch.manual_seed(epoch_seed)
    generator = torch.Generator()
    generator.manual_seed(epoch_seed)
    return generator
