"""Train one model on the folds != K, scoring fold K each epoch; resumable after any interruption."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from compkit.config import CompetitionConfig, ImageModel, TextModel
from compkit.errors import DamagedArtifact
from compkit.metrics import metric_name
from compkit.models.factory import build_embedder
from compkit.models.heads import ArcMarginHead, class_margins, create_head
from compkit.progress import NO_PROGRESS, Progress
from compkit.training.checkpoint import load_state, rng_state, save_state, seed_epoch, set_rng_state
from compkit.training.curves import write_training_curves
from compkit.training.device import autocast_dtype, resolve_device
from compkit.training.evaluate import embed_dataset, held_out_loss, identify_fold_score, match_fold_score, move_to
from compkit.training.rows import FoldRows, model_fold_inputs, training_fold_rows
from compkit.training.steps import EpochLoader, batches_per_epoch, create_training_step, set_body_trainable
from compkit.training.within_epoch import EpochSoFar, MidEpoch
from compkit.workspace import (
    RESUME_CHECKPOINT,
    Workspace,
    file_sha256,
    fingerprint,
    is_fresh,
    read_manifest,
    remove_path,
    set_aside,
    stage_inputs,
    write_csv,
    write_json,
    write_manifest,
)


@dataclass(frozen=True)
class FoldResult:
    model: str
    fold: int
    skipped: bool
    best_score: float
    best_threshold: float
    best_epoch: int
    run_dir: Path


def train_model_fold(
    config: CompetitionConfig,
    model: ImageModel | TextModel,
    fold: int,
    workspace: Workspace,
    *,
    device: str = "auto",
    force: bool = False,
    progress: Progress = NO_PROGRESS,
) -> FoldResult:
    """Train `model` on every fold but `fold`, keep its best checkpoint, and return the best held-out score.

    A fresh run is returned as it is, unless `force`: then the fold trains again from scratch.
    """
    run_dir = workspace.model_dir(model.name, fold)
    inputs = model_fold_inputs(config, model, fold, workspace)
    if force:
        remove_path(run_dir)
    elif is_fresh(run_dir, inputs):
        return _finished_result(model, fold, run_dir)
    torch_device = resolve_device(device)
    settings = model.train
    if settings.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    rows = training_fold_rows(config, workspace, model, fold)  # with its pseudo-labelled rows, if any
    torch.manual_seed(settings.seed)  # the initial weights are part of a seeded run
    build = build_embedder(model, config.columns)
    embedder = build.embedder.to(torch_device)
    head = create_head(model.head, model.embedding_dim, rows.n_classes).to(torch_device)
    channels_last = settings.channels_last and torch_device.type == "cuda" and model.kind == "image"
    if channels_last:
        embedder.to(memory_format=torch.channels_last)
    data = build.inputs(rows.frame, workspace.data_dir / config.data.train_images)
    train_set = data.dataset(rows.train, rows.train_labels, train=True)
    amp_dtype = autocast_dtype(settings.amp, torch_device)
    n_batches = batches_per_epoch(len(train_set), settings)
    trainer = create_training_step(
        embedder, head, settings, torch_device, steps_per_epoch=n_batches, amp_dtype=amp_dtype,
        channels_last=channels_last,
    )

    run_fingerprint = fingerprint(stage_inputs(inputs))
    state = _resume_state(workspace, model.name, fold, run_fingerprint, progress)
    history: list[dict] = []
    best = {"score": -1.0, "threshold": float("nan"), "epoch": -1}
    start_epoch, partial = 0, None
    if state is not None:
        trainer.load_state_dict(state)
        history, best, start_epoch = state["history"], state["best"], state["epoch"] + 1
        partial = state.get("partial")
    elif model.head.imprints_class_means:
        progress.log(f"{model.name} fold {fold}: centres of {rows.n_classes} classes from their mean embeddings")
        plain_rows = data.dataset(rows.train, rows.train_labels, train=False)
        fit_neck_statistics(embedder, plain_rows, torch_device, batch_size=settings.batch_size * 2)
        rows_embedded = embed_dataset(embedder, plain_rows, device=torch_device, batch_size=settings.batch_size * 2,
                                      autocast_dtype=amp_dtype, channels_last=channels_last)
        head.imprint(torch.as_tensor(rows_embedded), torch.as_tensor(rows.train_labels),
                     torch.Generator().manual_seed(settings.seed))
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(workspace.resolved_config(model.name, fold), {"model": model.name, "fold": fold, **build.resolved})

    epochs_task = progress.task(f"{model.name} fold {fold}", total=settings.epochs)
    epochs_task.update(completed=start_epoch)
    class_sizes = np.bincount(rows.train_labels, minlength=rows.n_classes)
    loader = EpochLoader(train_set, rows.train_labels, settings, seed=settings.seed, device=torch_device)
    resume_path = workspace.resume_checkpoint(model.name, fold)

    def resume_state(epoch: int, **extra) -> dict:
        """Return the state a run resumes from: after `epoch`, plus (mid-epoch) the next epoch's part done."""
        return {"fingerprint": run_fingerprint, "epoch": epoch, **trainer.state_dict(), "history": history,
                "best": best, "rng": rng_state(), **extra}

    for epoch in range(start_epoch, settings.epochs):
        _schedule_epoch(model, embedder, head, class_sizes, epoch)
        seed_epoch(settings.seed, epoch)
        so_far = EpochSoFar.resumed(partial, epoch)
        if so_far.rng is not None:
            set_rng_state(so_far.rng)  # after the batches done, as the uninterrupted run was
        within = MidEpoch(
            trainer, so_far, n_batches=n_batches, epochs=settings.epochs, batch_size=settings.batch_size,
            interval_s=settings.checkpoint_minutes * 60, task=epochs_task,
            save=lambda part, done=epoch - 1: save_state(resume_path, resume_state(done, partial=part)),
        )
        losses = so_far.losses + trainer.run_epoch(loader.epoch(epoch, start_batch=so_far.batches_done),
                                                   start_batch=so_far.batches_done, after_step=within)
        training_seconds = within.seconds()
        record = {
            "epoch": epoch,
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "held_out_loss": float("nan"),
            "score": float("nan"),
            "threshold": float("nan"),
            "lr": trainer.optimizer.param_groups[0]["lr"],
            "rows_per_second": len(losses) * settings.batch_size / max(training_seconds, 1e-9),
        }
        if _is_scored(epoch, settings):
            evaluated = trainer.evaluated
            if settings.recalibrate_bn:
                recalibrate_batchnorm(evaluated, data.dataset(rows.train, rows.train_labels, train=False),
                                      torch_device, batch_size=settings.batch_size * 2)
            score, valid = _score_fold(config, model, evaluated, data, rows, torch_device, amp_dtype,
                                       channels_last)
            record.update(score=score.score, threshold=score.threshold,
                          held_out_loss=held_out_loss(head, valid, rows.valid_labels, rows.n_classes))
            if score.score > best["score"]:
                best = {"score": score.score, "threshold": score.threshold, "epoch": epoch}
                best_state = {"embedder": evaluated.state_dict(), "best": best, "n_classes": rows.n_classes,
                              **_class_centres(head, rows)}
                save_state(workspace.best_checkpoint(model.name, fold), best_state)
        record.update(seconds=within.seconds(), finished_at=datetime.now(UTC).isoformat(timespec="seconds"))
        history.append(record)
        save_state(resume_path, resume_state(epoch))
        _write_log(config, workspace, model.name, fold, history)
        epochs_task.update(completed=epoch + 1, info=_epoch_line(record, settings.epochs))
    _write_log(config, workspace, model.name, fold, history)  # also when resumed at the end
    write_manifest(run_dir, inputs, best=best, epochs=settings.epochs, resumed_from_epoch=start_epoch,
                   resumed_from_batch=partial["batches_done"] if partial else 0)
    return FoldResult(model.name, fold, False, best["score"], best["threshold"], best["epoch"], run_dir)


def _resume_state(workspace: Workspace, model: str, fold: int, run_fingerprint: str, progress: Progress):
    """Return the state to resume the fold's run from, or None to train from scratch, saying why.

    A damaged last.pt, or a damaged best.pt (its best weights cannot be remade from a later state), is set
    aside as `<name>.damaged` and the run starts again; a last.pt of other inputs is discarded with the run.
    """
    run_dir, last, best = (workspace.model_dir(model, fold), workspace.resume_checkpoint(model, fold),
                           workspace.best_checkpoint(model, fold))
    try:
        state = load_state(last)
        if state is not None and state.get("fingerprint") == run_fingerprint and state["best"]["epoch"] >= 0:
            _check_best(run_dir, best, run_fingerprint)
    except DamagedArtifact as error:
        damaged = Path(error.path)
        aside = f"; set aside as {set_aside(damaged).name}" if damaged.exists() else ""
        for path in (last, best, workspace.training_log(model, fold)):
            remove_path(path)
        progress.log(f"{model} fold {fold}: {error}{aside}; training from scratch")
        return None
    if state is None:
        return None
    if state.get("fingerprint") != run_fingerprint:
        remove_path(run_dir)
        return None
    partial = state.get("partial")
    where = (f"within epoch {partial['epoch']} after batch {partial['batches_done']}" if partial
             else f"after epoch {state['epoch']}")
    progress.log(f"{model} fold {fold}: resuming {where} from {last.name}")
    return state


def _check_best(run_dir: Path, best: Path, run_fingerprint: str) -> None:
    """Raise DamagedArtifact when best.pt differs from what the run's manifest recorded, or cannot be loaded."""
    manifest = read_manifest(run_dir) or {}
    recorded = (manifest.get("outputs") or {}).get(f"{run_dir.name}/{best.name}")
    if recorded and manifest.get("fingerprint") == run_fingerprint:
        if not best.is_file() or best.stat().st_size != recorded["bytes"] or file_sha256(best) != recorded["sha256"]:
            raise DamagedArtifact(best, "damaged checkpoint (differs from the run's manifest)")
    elif load_state(best) is None:
        raise DamagedArtifact(best, f"missing while {RESUME_CHECKPOINT} records a best epoch")


def _schedule_epoch(model, embedder, head, class_sizes: np.ndarray, epoch: int) -> None:
    """Apply the epoch's margins (warm-up, dynamic per class) and the frozen-backbone warm-up."""
    settings = model.head
    if isinstance(head, ArcMarginHead) and (settings.margin_start is not None or settings.dynamic_margin):
        head.set_margins(class_margins(settings, class_sizes, epoch))
    if model.train.freeze_backbone_epochs:
        set_body_trainable(embedder, epoch >= model.train.freeze_backbone_epochs)


def _class_centres(head, rows: FoldRows) -> dict:
    """Return a margin head's class centres and their labels, for identify's kNN + head score fusion."""
    if not isinstance(head, ArcMarginHead):
        return {}
    centres = torch.nn.functional.normalize(head.weight.detach().float().cpu(), dim=1)
    return {"centres": centres.view(head.n_classes, head.subcenters, -1),
            "centre_labels": [str(label) for label in rows.classes]}


def _write_log(config, workspace: Workspace, model: str, fold: int, history: list[dict]) -> None:
    """Write the run's log.csv and curves.png (training and held-out losses, held-out score per epoch)."""
    write_csv(workspace.training_log(model, fold), pd.DataFrame(history))
    write_training_curves(workspace.training_curves(model, fold), history, title=f"{config.slug} {model} fold {fold}",
                          metric=metric_name(config.task))


def _epoch_line(record: dict, epochs: int) -> str:
    """Return what the progress task shows of a finished epoch (one plain line without a terminal)."""
    parts = [f"epoch {record['epoch'] + 1}/{epochs}", f"loss {record['loss']:.3f}"]
    if not np.isnan(record["held_out_loss"]):
        parts.append(f"held-out loss {record['held_out_loss']:.3f}")
    parts.append(f"score {record['score']:.4f}" if not np.isnan(record["score"]) else "score -")
    parts.append(f"{record['rows_per_second']:.0f} rows/s")
    return "  ".join(parts)


def _is_scored(epoch: int, settings) -> bool:
    """Return whether the held-out fold is scored after `epoch` (always after the last one)."""
    return epoch >= settings.score_from_epoch or epoch == settings.epochs - 1


@torch.no_grad()
def recalibrate_batchnorm(embedder, dataset, device: torch.device, *, batch_size: int) -> None:
    """Re-estimate BatchNorm statistics on un-augmented training rows (precise BN) before evaluating.

    Early in from-scratch training the running averages lag the fast-moving weights, and every embedding
    then shares one stale offset; fresh statistics remove it.
    """
    from torch.optim.swa_utils import update_bn

    update_bn((move_to(inputs, device) for inputs, _ in _statistics_batches(dataset, batch_size)), embedder,
              device=None)


@torch.no_grad()
def fit_neck_statistics(embedder, dataset, device: torch.device, *, batch_size: int) -> None:
    """Set the neck's BatchNorm statistics to those of `dataset`, the backbone untouched (in eval mode).

    A fresh neck's running statistics (mean 0, variance 1) are not what training will normalise with, so
    class centres imprinted from its evaluation-mode embeddings would sit in another geometry.
    """
    neck = getattr(embedder, "neck", nn.Identity())
    norms = [m for m in neck.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    embedder.eval()
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over every batch
        norm.train()
    for inputs, _ in _statistics_batches(dataset, batch_size):
        embedder(move_to(inputs, device))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
        norm.eval()


def _statistics_batches(dataset, batch_size: int) -> DataLoader:
    """Return `dataset` in order, in batches BatchNorm can take statistics of: a last batch of a single row,
    which training-mode BatchNorm refuses, is left out."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=len(dataset) % batch_size == 1)


def _score_fold(config, model, embedder, data, rows: FoldRows, device, amp_dtype, channels_last):
    """Return the held-out fold's score and its rows' embeddings."""
    from compkit.neighbors import get_backend

    knn = get_backend(config.neighbors.backend)
    kwargs = {"device": device, "batch_size": model.train.batch_size * 2, "autocast_dtype": amp_dtype,
              "channels_last": channels_last}
    valid = embed_dataset(embedder, data.dataset(rows.valid, rows.valid_labels, train=False), **kwargs)
    if config.task == "match":
        return match_fold_score(valid, rows.valid_labels, max_matches=config.postprocess.max_matches, knn=knn), valid
    gallery = embed_dataset(embedder, data.dataset(rows.train, rows.train_labels, train=False), **kwargs)
    score = identify_fold_score(
        valid, rows.valid_labels, gallery, rows.train_labels, top_n=config.postprocess.top_n, knn=knn
    )
    return score, valid


def _finished_result(model, fold: int, run_dir: Path) -> FoldResult:
    best = (read_manifest(run_dir) or {}).get("best", {})
    return FoldResult(
        model.name, fold, True, best.get("score", float("nan")), best.get("threshold", float("nan")),
        best.get("epoch", -1), run_dir,
    )
