"""Checkpoints: an atomic resume state after every epoch (and every few minutes within one), and the best weights."""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compkit.errors import DamagedArtifact
from compkit.workspace import atomic_path


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write a torch checkpoint atomically (a kill mid-write leaves the previous one intact)."""
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def load_state(path: Path) -> dict[str, Any] | None:
    """Return a checkpoint's contents, or None when there is none; DamagedArtifact when it is damaged."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as error:
        raise DamagedArtifact(path, f"damaged checkpoint ({str(error).splitlines()[0][:120]})") from None
    if not isinstance(state, dict):
        raise DamagedArtifact(path, "damaged checkpoint (not a dict of states)")
    return state


def rng_state() -> dict[str, Any]:
    """Return the process's RNG states (python, numpy, torch, and CUDA's once it is in use)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore RNG states saved by `rng_state`: a run resumed within an epoch draws what it would have drawn."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def epoch_seed(seed: int, epoch: int) -> int:
    """Return the seed of one epoch of a run seeded with `seed`."""
    return seed * 10_007 + epoch


def seed_epoch(seed: int, epoch: int) -> None:
    """Seed the process's RNGs from (seed, epoch), so a resumed epoch replays exactly (the loader's batches and
    augmentations have their own seeds: see training.steps.EpochBatches)."""
    value = epoch_seed(seed, epoch)
    random.seed(value)
    np.random.seed(value % (2**32))
    torch.manual_seed(value)
