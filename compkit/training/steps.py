"""The training step of an embedder and its margin head, and the loader, optimiser and schedule it runs with.

`train_model_fold` runs one `TrainingStep.run_epoch` per epoch; `benchmarks/train_throughput.py` times the
same object, so the benchmark measures the code that training runs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler

from compkit.config import TrainSettings
from compkit.training.checkpoint import epoch_seed
from compkit.training.evaluate import move_to
from compkit.training.samplers import ClassBalancedBatchSampler
from compkit.training.schedule import WarmupCosine


class EpochBatches(Sampler[list[tuple[int, int]]]):
    """The batches of one epoch at a time (`set_epoch`), each row paired with its own augmentation seed.

    Shuffled or class-balanced as `settings.sampler` says, both drawn from (seed, epoch) alone. The per-row
    seed makes a row's augmentation the same whichever worker process draws it, so an epoch replays exactly
    with any `num_workers` and after a resume; `start_batch` skips the batches a mid-epoch checkpoint had
    done (their indices are drawn, their rows never loaded).
    """

    def __init__(self, labels: np.ndarray, settings: TrainSettings, *, seed: int) -> None:
        self.labels, self.settings, self.seed, self.epoch, self.start_batch = np.asarray(labels), settings, seed, 0, 0
        if settings.sampler == "class_balanced":
            self._batches(torch.Generator())  # refuses bad sampler settings now, not in the first epoch

    def set_epoch(self, epoch: int, *, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return max(0, batches_per_epoch(len(self.labels), self.settings) - self.start_batch)

    def _batches(self, generator: torch.Generator):
        settings = self.settings
        if settings.sampler == "class_balanced":
            return ClassBalancedBatchSampler(self.labels, batch_size=settings.batch_size,
                                             images_per_class=settings.images_per_class, generator=generator)
        drop_last = len(self.labels) > settings.batch_size
        return BatchSampler(RandomSampler(range(len(self.labels)), generator=generator),
                            settings.batch_size, drop_last=drop_last)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        row_seeds = np.random.default_rng(epoch_seed(self.seed, self.epoch))
        for index, batch in enumerate(self._batches(generator)):
            seeds = row_seeds.integers(0, 2**31, len(batch)).tolist()
            if index >= self.start_batch:
                yield list(zip(seeds, batch, strict=True))


class EpochLoader:
    """One DataLoader for every epoch of a run, so worker processes (and their decoded images) persist.

    `epoch(k)` returns the loader set to epoch k's batches. With `num_workers` > 0, decoding and augmentation
    run in the workers, `prefetch_factor` batches ahead of the training step.
    """

    def __init__(self, dataset: Dataset, labels: np.ndarray, settings: TrainSettings, *, seed: int,
                 device: torch.device) -> None:
        self.batches = EpochBatches(labels, settings, seed=seed)
        workers, pin_memory = loader_workers(settings, device), device.type == "cuda"
        # its own generator: starting the loader's iterator would otherwise draw from the global RNG, which a
        # resumed run (a new iterator, new workers) would then leave in another state than an uninterrupted one
        self.loader = DataLoader(dataset, batch_sampler=self.batches, num_workers=workers, pin_memory=pin_memory,
                                 persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed),
                                 collate_fn=getattr(dataset, "collate", None))

    def epoch(self, epoch: int, *, start_batch: int = 0) -> DataLoader:
        """Return the loader set to epoch `epoch`'s batches from `start_batch` on."""
        self.batches.set_epoch(epoch, start_batch=start_batch)
        return self.loader


def loader_workers(settings: TrainSettings, device: torch.device) -> int:
    """Return the DataLoader's worker processes: the setting, else on CUDA every core but the one that feeds
    the GPU (as a Kaggle notebook's 4 cores want), on CPU none (the main process then trains on every core)."""
    if settings.num_workers is not None:
        return settings.num_workers
    return max(0, (os.cpu_count() or 1) - 1) if device.type == "cuda" else 0


def batches_per_epoch(n_rows: int, settings: TrainSettings) -> int:
    """Return how many batches one epoch of `n_rows` training rows makes (both samplers drop the remainder)."""
    return max(1, n_rows // settings.batch_size)


@dataclass
class TrainingStep:
    """Everything one optimiser step touches; `run_epoch` trains one pass of a loader and returns its losses."""

    embedder: nn.Module
    head: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    grad_accum: int = 1
    clip_grad: float | None = None
    ema: Any = None

    @property
    def evaluated(self) -> nn.Module:
        """Return the weights to score and keep: the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else self.embedder

    def run_epoch(
        self, loader: DataLoader, *, start_batch: int = 0, after_step: Callable[[int, list], None] | None = None
    ) -> list[float]:
        """Train on `loader`'s batches (those of an epoch from `start_batch` on) and return their losses.

        `after_step(batches done in the epoch, this call's losses so far)` runs after each optimiser step,
        where no gradient is pending: the place for a mid-epoch checkpoint (`host_losses` reads the losses).
        """
        self.embedder.train()
        self.head.train()
        losses = []
        n_batches = start_batch + len(loader)
        for step, (batch, labels) in enumerate(loader, start=start_batch):
            batch = move_to(batch, self.device, channels_last=self.channels_last)
            labels = labels.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                loss = self.head.loss(self.embedder(batch), labels) / self.grad_accum
            self.scaler.scale(loss).backward()
            losses.append(loss.detach())
            if (step + 1) % self.grad_accum == 0 or step + 1 == n_batches:
                self._optimizer_step()
                if after_step is not None:
                    after_step(step + 1, losses)
        return self.host_losses(losses)

    def host_losses(self, losses: list[torch.Tensor]) -> list[float]:
        """Return the losses of `run_epoch` as floats (one host sync for all of them, not one per step)."""
        return (torch.stack(losses).float().cpu() * self.grad_accum).tolist() if losses else []

    def _optimizer_step(self) -> None:
        if self.clip_grad:
            self.scaler.unscale_(self.optimizer)
            parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(parameters, self.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.embedder)

    def state_dict(self) -> dict[str, Any]:
        return {
            "embedder": self.embedder.state_dict(),
            "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.embedder.load_state_dict(state["embedder"])
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])


def create_training_step(
    embedder: nn.Module,
    head: nn.Module,
    settings: TrainSettings,
    device: torch.device,
    *,
    steps_per_epoch: int,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> TrainingStep:
    """Return a TrainingStep: AdamW, warm-up + cosine per step, AMP scaler, EMA when configured.

    The backbone (or text encoder) learns at `lr`; the layers added on top of it (pooling, neck) and the
    margin head at `head_lr`, since a pretrained encoder's small LR would leave a fresh neck almost untrained.
    """
    body, new_layers = _body_and_new_layers(embedder)
    optimizer = torch.optim.AdamW(
        [
            {"params": body, "lr": settings.lr},
            {"params": new_layers + list(head.parameters()), "lr": settings.head_lr or settings.lr},
        ],
        weight_decay=settings.weight_decay,
    )
    optimizer_steps = math.ceil(steps_per_epoch / settings.grad_accum)
    schedule = WarmupCosine(round(settings.warmup_epochs * optimizer_steps), settings.epochs * optimizer_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    ema = None
    if settings.ema_decay:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(embedder, decay=settings.ema_decay)
    return TrainingStep(
        embedder, head, optimizer, scheduler, scaler, device, amp_dtype=amp_dtype, channels_last=channels_last,
        grad_accum=settings.grad_accum, clip_grad=settings.clip_grad, ema=ema,
    )


def set_body_trainable(embedder: nn.Module, trainable: bool) -> None:
    """Freeze or unfreeze the backbone (or encoder); the optimiser skips parameters that get no gradient."""
    for parameter in _body_and_new_layers(embedder)[0]:
        parameter.requires_grad_(trainable)


def _body_and_new_layers(embedder: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Return (backbone or encoder parameters, the embedder's other parameters)."""
    body = embedder.backbone if hasattr(embedder, "backbone") else getattr(embedder, "encoder", None)
    body_ids = {id(p) for p in body.parameters()} if body is not None else set()
    parameters = list(embedder.parameters())
    return [p for p in parameters if id(p) in body_ids], [p for p in parameters if id(p) not in body_ids]
