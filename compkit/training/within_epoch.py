"""Within one epoch: what it has done so far, kept in a mid-epoch checkpoint every few minutes, and reported.

A long epoch (40 minutes of a large backbone) would otherwise lose everything since its start to a kill -9.
The mid-epoch state is the resume state of the epoch's end (weights, optimiser, schedule, scaler, EMA) plus
the RNG states, the batches done and their losses; the epoch's batches are drawn from (seed, epoch) alone,
so a resumed run skips the batches done and trains on exactly the ones an uninterrupted run would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from compkit.progress import ProgressTask
from compkit.training.checkpoint import rng_state

# How often the progress task hears about a running epoch: each report reads the recent losses back from
# the device, which is no cost once a second.
REPORT_INTERVAL_S = 1.0


@dataclass
class EpochSoFar:
    """The part of an epoch a mid-epoch checkpoint holds: batches done, their losses, seconds spent on it."""

    epoch: int
    batches_done: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    rng: dict[str, Any] | None = None  # the RNG states after the batches done

    @classmethod
    def resumed(cls, partial: dict | None, epoch: int) -> EpochSoFar:
        """Return the part of `epoch` that a checkpoint's `partial` entry records (nothing when it is of another)."""
        if not partial or partial.get("epoch") != epoch:
            return cls(epoch)
        return cls(**partial)


class MidEpoch:
    """The `after_step` of one epoch's `TrainingStep.run_epoch`: saves the mid-epoch state every
    `interval_s` of training (0: never) and reports progress to `task` about once a second."""

    def __init__(self, trainer, so_far: EpochSoFar, *, n_batches: int, epochs: int, batch_size: int,
                 interval_s: float, save: Callable[[dict], None], task: ProgressTask) -> None:
        self.trainer, self.so_far, self.n_batches, self.epochs = trainer, so_far, n_batches, epochs
        self.batch_size, self.interval_s, self.save, self.task = batch_size, interval_s, save, task
        self.started = self.last_saved = self.last_report = time.perf_counter()
        self.reported_losses = 0

    def seconds(self) -> float:
        """Return the seconds spent on the epoch: before a resume, and in this process."""
        return self.so_far.seconds + time.perf_counter() - self.started

    def __call__(self, batches_done: int, losses: list[torch.Tensor]) -> None:
        now = time.perf_counter()
        if self.interval_s and now - self.last_saved >= self.interval_s and batches_done < self.n_batches:
            self._save(batches_done, losses)
            self.last_saved = time.perf_counter()
        if now - self.last_report >= REPORT_INTERVAL_S:
            self._report(batches_done, losses, now)

    def _save(self, batches_done: int, losses: list[torch.Tensor]) -> None:
        so_far = EpochSoFar(self.so_far.epoch, batches_done, self.so_far.losses + self.trainer.host_losses(losses),
                            self.seconds(), rng_state())
        self.save(asdict(so_far))

    def _report(self, batches_done: int, losses: list[torch.Tensor], now: float) -> None:
        recent = self.trainer.host_losses(losses[self.reported_losses:])
        self.reported_losses = len(losses)
        rows_per_second = len(losses) * self.batch_size / max(now - self.started, 1e-9)
        loss = f"  loss {sum(recent) / len(recent):.3f}" if recent else ""
        self.task.update(
            completed=self.so_far.epoch + batches_done / self.n_batches,
            info=f"epoch {self.so_far.epoch + 1}/{self.epochs}  batch {batches_done}/{self.n_batches}{loss}  "
                 f"{rows_per_second:.0f} rows/s",
        )
        self.last_report = now
