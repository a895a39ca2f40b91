"""`compkit train` and `compkit embed`: models per fold, and their cached OOF and test embeddings."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from compkit.cli.console import RichProgress, handle_errors, stderr, stdout
from compkit.cli.options import (
    Competition,
    Force,
    Knn,
    Models,
    Overrides,
    Scheduler,
    WorkspaceBase,
    open_config,
)
from compkit.workspace import Workspace

FoldChoice = Annotated[
    list[str] | None,
    typer.Option("--fold", metavar="K[,K...]|all", help="Folds to hold out: repeat or separate with commas "
                 "(--fold 0,1); default: all.", show_default=False),
]
Backend = Annotated[str, typer.Option("--backend", metavar="<auto|loky|dask>", help="Where tasks run: loky "
                                      "(--jobs local processes) or dask (the cluster at --scheduler); auto: dask "
                                      "when --scheduler is given.")]
Device = Annotated[str, typer.Option("--device", metavar="<auto|cpu|cuda>",
                                     help="Where to train: auto (CUDA when torch sees a GPU), cpu or cuda.")]


def register(app: typer.Typer) -> None:
    app.command("train")(handle_errors(train))
    app.command("embed")(handle_errors(embed))


def train(
    competition: Competition = None,
    overrides: Overrides = None,
    fold: FoldChoice = None,
    model: Models = None,
    jobs: Annotated[int, typer.Option("--jobs", help="Parallel worker processes (threads are split among them).")] = 1,
    device: Device = "auto",
    backend: Backend = "auto",
    scheduler: Scheduler = None,
    knn: Knn = None,
    force: Force = False,
    workspace: WorkspaceBase = None,
) -> None:
    """Train every model on the other folds, score the held-out fold, and cache OOF and test embeddings."""
    _run(competition, overrides, fold, model, jobs, device, backend, scheduler, workspace, embed_only=False, knn=knn,
         force=force)


def embed(
    competition: Competition = None,
    overrides: Overrides = None,
    fold: FoldChoice = None,
    model: Models = None,
    device: Device = "auto",
    scheduler: Scheduler = None,
    force: Force = False,
    workspace: WorkspaceBase = None,
) -> None:
    """Rebuild OOF and test embeddings from the trained checkpoints alone (no training)."""
    _run(competition, overrides, fold, model, 1, device, "auto", scheduler, workspace, embed_only=True, force=force)


def _run(competition, overrides, fold, models, jobs, device, backend, scheduler, workspace, *, embed_only: bool,
         knn: str | None = None, force: bool = False) -> None:
    from compkit.embeddings.runner import parse_folds, run_models

    config = open_config(competition, overrides, models, knn=knn)
    space = Workspace.for_competition(config.slug, workspace)
    folds = parse_folds(fold, space)
    with RichProgress() as progress:
        outcomes = run_models(
            config, space, folds=folds, jobs=jobs, device=device, backend=backend,
            scheduler=scheduler, embed_only=embed_only, force=force, progress=progress,
        )
    table = Table("model", "fold", "training", "best epoch", "held-out score", "threshold", "embeddings",
                  title=f"{config.slug}: {'embed' if embed_only else 'train'}")
    for outcome in outcomes:
        trained = outcome.trained
        if trained is None:
            training, epoch, score, threshold = "-", "-", "-", "-"
        else:
            training = "skipped (fresh)" if trained.skipped else "trained"
            epoch, score = str(trained.best_epoch), f"{trained.best_score:.4f}"
            threshold = f"{trained.best_threshold:.2f}"
        embedded = "cached (fresh)" if outcome.embedded.skipped else "written"
        table.add_row(outcome.model, str(outcome.fold), training, epoch, score, threshold, embedded)
    stdout.print(table)
    stderr.print(f"embeddings in {space.root / 'embeddings'}", highlight=False)
