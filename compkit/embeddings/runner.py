"""Train and embed many (model, fold) pairs: in this process, in local processes (joblib), or on a Dask cluster."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

from compkit.config import COMBINED_KINDS, CompetitionConfig
from compkit.embeddings.fold_task import TaskOutcome, run_model_fold
from compkit.errors import ConfigError, ParameterError
from compkit.progress import NO_PROGRESS, Progress
from compkit.workspace import Workspace

BACKENDS = ("auto", "loky", "dask")


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


def run_models(
    config: CompetitionConfig,
    workspace: Workspace,
    *,
    folds: list[int],
    models: list[str] | None = None,
    jobs: int = 1,
    device: str = "auto",
    backend: str = "auto",
    scheduler: str | None = None,
    embed_only: bool = False,
    force: bool = False,
    progress: Progress = NO_PROGRESS,
) -> list[TaskOutcome]:
    """Return the outcome of every (model, fold) task, run in this process, in `jobs` local processes (loky),
    or as tasks on the Dask cluster at `scheduler` (backend `dask`; `auto` picks it when a scheduler is given).

    Fresh tasks are skipped unless `force`, which trains (unless embed_only) and embeds them again.
    """
    backend = resolve_backend(backend, scheduler)
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


def resolve_backend(backend: str, scheduler: str | None) -> str:
    """Return `loky` or `dask` for the --backend and --scheduler given."""
    if backend == "auto":
        return "dask" if scheduler else "loky"
    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "loky" and scheduler:
        raise ConfigError("--scheduler runs on a Dask cluster: use --backend dask (or leave --backend out)")
    return backend


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
    if backend == "dask":
        from compkit.embeddings.on_cluster import run_on_cluster  # dask.distributed

        outcomes = run_on_cluster(config, workspace, tasks, device=device, scheduler=scheduler,
                                  embed_only=embed_only, force=force, overall=overall)
        return _in_task_order(outcomes, tasks)
    from joblib import Parallel, delayed, parallel_config

    threads = max(1, (os.cpu_count() or 1) // jobs)
    with parallel_config(backend="loky", n_jobs=jobs, inner_max_num_threads=threads), warnings.catch_warnings():
        # loky replaces a worker whose memory grew by 300 MB since it started (a trained fold's decoded images
        # do) and warns of "a memory leak" when jobs are waiting: expected here, and not the user's to fix.
        warnings.filterwarnings("ignore", message="A worker stopped while some jobs were given to the executor")
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
    return _in_task_order(outcomes, tasks)


def _in_task_order(outcomes: list[TaskOutcome], tasks) -> list[TaskOutcome]:
    order = {task: i for i, task in enumerate(tasks)}
    return sorted(outcomes, key=lambda o: order[(o.model, o.fold)])
