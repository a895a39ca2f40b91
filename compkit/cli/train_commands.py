"""`compkit train` and `compkit embed`: models per fold, and their cached OOF and test embeddings."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from compkit.cli.console import RichProgress, handle_errors, stderr, stdout
from compkit.cli.options import Competition, Force, Knn, WorkspaceBase
from compkit.config import load_config, with_knn_backend
from compkit.workspace import Workspace

FoldChoice = Annotated[str, typer.Option("--fold", help="Fold to hold out, or 'all'.")]
ModelNames = Annotated[list[str] | None, typer.Option("--model", help="Model name (repeat for several; default: all).")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]


def register(app: typer.Typer) -> None:
    app.command("train")(handle_errors(train))
    app.command("embed")(handle_errors(embed))


def train(
    competition: Competition,
    fold: FoldChoice = "all",
    model: ModelNames = None,
    jobs: Annotated[int, typer.Option("--jobs", help="Parallel worker processes (threads are split among them).")] = 1,
    device: Device = "auto",
    backend: Annotated[str, typer.Option("--backend", help="joblib backend: loky (local) or dask.")] = "loky",
    scheduler: Annotated[str | None, typer.Option("--scheduler", help="Dask scheduler address.")] = None,
    knn: Knn = None,
    force: Force = False,
    workspace: WorkspaceBase = None,
) -> None:
    """Train every model on the other folds, score the held-out fold, and cache OOF and test embeddings."""
    _run(competition, fold, model, jobs, device, backend, scheduler, workspace, embed_only=False, knn=knn,
         force=force)


def embed(
    competition: Competition,
    fold: FoldChoice = "all",
    model: ModelNames = None,
    device: Device = "auto",
    force: Force = False,
    workspace: WorkspaceBase = None,
) -> None:
    """Rebuild OOF and test embeddings from the trained checkpoints alone (no training)."""
    _run(competition, fold, model, 1, device, "loky", None, workspace, embed_only=True, force=force)


def _run(competition, fold, models, jobs, device, backend, scheduler, workspace, *, embed_only: bool,
         knn: str | None = None, force: bool = False) -> None:
    from compkit.embeddings.runner import parse_folds, run_models

    config = with_knn_backend(load_config(competition), knn)
    space = Workspace.for_competition(config.slug, workspace)
    folds = parse_folds(fold, space)
    with RichProgress() as progress:
        outcomes = run_models(
            config, space, folds=folds, models=models, jobs=jobs, device=device, backend=backend,
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
