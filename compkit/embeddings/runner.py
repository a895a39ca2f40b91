"""Train and embed many (model, fold) pairs: in this process, or in parallel workers through joblib."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from compkit.config import COMBINED_KINDS, CompetitionConfig, is_trained
from compkit.embeddings.cache import EmbeddingResult, embed_model_fold
from compkit.errors import BackendUnavailable, ConfigError, ParameterError
from compkit.progress import NO_PROGRESS, Progress
from compkit.training.loop import FoldResult, train_model_fold
from compkit.workspace import Workspace


@dataclass(frozen=True)
class TaskOutcome:
    model: str
    fold: int
    trained: FoldResult | None
    embedded: EmbeddingResult


def parse_folds(fold: str | Sequence[str] | None, workspace: Workspace) -> list[int]:
    """Return the folds that `fold` names: 'all' or None (every fold of folds.csv), or fold numbers, given as
    repeated values and/or separated by commas ("0,1"), in order without repeats."""
    folds = workspace.fold_range()
    values = [fold] if isinstance(fold, str) else list(fold or [])
    parts = [part.strip() for value in values for part in value.split(",") if part.strip()]
    if not parts or parts == ["all"]:
        return folds
    chosen = []
    for part in parts:
        try:
            value = int(part)
        except ValueError:
            raise ParameterError("fold", part, "must be fold numbers (0,1) or 'all'") from None
        if value not in folds:
            raise ParameterError("fold", value, f"must be between 0 and {len(folds) - 1} (or 'all'): "
                                                f"{workspace.folds_path.name} has {len(folds)} folds")
        chosen.append(value)
    return list(dict.fromkeys(chosen))


def run_model_fold(
    config: CompetitionConfig,
    model_name: str,
    fold: int,
    workspace: Workspace,
    *,
    device: str = "auto",
    threads: int | None = None,
    embed_only: bool = False,
    force: bool = False,
    progress: Progress = NO_PROGRESS,
) -> TaskOutcome:
    """Train (unless it is a matcher, or embed_only) then embed one model on one fold; `force`: even when fresh."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    model = config.model(model_name)
    trained = None
    if is_trained(model) and not embed_only:
        trained = train_model_fold(config, model, fold, workspace, device=device, force=force, progress=progress)
    embedded = embed_model_fold(config, model, fold, workspace, device=device, force=force, progress=progress)
    return TaskOutcome(model.name, fold, trained, embedded)


def run_models(
    config: CompetitionConfig,
    workspace: Workspace,
    *,
    folds: list[int],
    models: list[str] | None = None,
    jobs: int = 1,
    device: str = "auto",
    backend: str = "loky",
    scheduler: str | None = None,
    embed_only: bool = False,
    force: bool = False,
    progress: Progress = NO_PROGRESS,
) -> list[TaskOutcome]:
    """Return the outcome of every (model, fold) task, run with `jobs` workers of the joblib `backend`.

    Fresh tasks are skipped unless `force`, which trains (unless embed_only) and embeds them again.
    """
    selected = [config.model(name) for name in models] if models else list(config.embedding_models)
    combined = next((model for model in selected if model.kind in COMBINED_KINDS), None)
    if combined is not None:
        raise ConfigError(f"model {combined.name!r} of kind {combined.kind!r} trains nothing: it combines the "
                          f"embeddings of {', '.join(combined.members)} (train those)")
    if not selected:
        raise ConfigError(f"{config.slug} declares no models: add [[models]] tables to its competition.toml")
    if jobs < 1:
        raise ParameterError("jobs", jobs, "must be >= 1")
    _check_backbones(config, selected)
    tasks = [(model.name, fold) for model in selected for fold in folds]
    overall = progress.task("models x folds", total=len(tasks))
    if jobs == 1 and backend == "loky":
        outcomes = []
        for name, fold in tasks:
            outcomes.append(
                run_model_fold(config, name, fold, workspace, device=device, embed_only=embed_only, force=force,
                               progress=progress)
            )
            overall.advance(1)
        return outcomes
    return _run_parallel(config, workspace, tasks, jobs, device, backend, scheduler, embed_only, force, overall)


def _check_backbones(config: CompetitionConfig, models) -> None:
    """Refuse an unknown timm backbone before any model trains, not when training reaches it."""
    image_models = [model for model in models if model.kind == "image"]
    if not image_models:
        return
    import timm

    for model in image_models:
        if not timm.is_model(model.backbone):
            index = config.models.index(model)
            raise ConfigError(f"{config.slug}: models[{index}].backbone {model.backbone!r} of model {model.name!r} "
                              "is not a timm model (see timm.list_models())")


def _run_parallel(config, workspace, tasks, jobs, device, backend, scheduler, embed_only, force, overall):
    from joblib import Parallel, delayed, parallel_config

    threads = max(1, (os.cpu_count() or 1) // jobs)
    client = _dask_client(scheduler) if backend == "dask" else None
    if backend not in ("loky", "dask"):
        raise ConfigError(f"--backend must be loky or dask, got {backend!r}")
    try:
        inner_threads = threads if backend == "loky" else None
        with parallel_config(backend=backend, n_jobs=jobs, inner_max_num_threads=inner_threads):
            results = Parallel(return_as="generator_unordered")(
                delayed(run_model_fold)(
                    config, name, fold, workspace, device=device, threads=threads, embed_only=embed_only, force=force
                )
                for name, fold in tasks
            )
            outcomes = []
            for outcome in results:
                outcomes.append(outcome)
                overall.advance(1)
    finally:
        if client is not None:
            client.close()
    order = {task: i for i, task in enumerate(tasks)}
    return sorted(outcomes, key=lambda o: order[(o.model, o.fold)])


def _dask_client(scheduler: str | None):
    try:
        from dask.distributed import Client
    except ImportError:
        raise BackendUnavailable("--backend dask needs dask.distributed: pip install 'compkit[dask]'") from None
    if not scheduler:
        raise ConfigError("--backend dask needs --scheduler ADDRESS (e.g. tcp://10.0.0.5:8786)")
    return Client(scheduler)
