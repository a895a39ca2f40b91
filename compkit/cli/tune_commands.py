"""`compkit tune-threshold` and `compkit predict`: tuned post-processing, and one CSV per model."""

from __future__ import annotations

import json
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
    Storage,
    WorkspaceBase,
    open_config,
)
from compkit.config import model_names
from compkit.workspace import Workspace


def register(app: typer.Typer) -> None:
    app.command("tune-threshold")(handle_errors(tune_threshold))
    app.command("predict")(handle_errors(predict))


def tune_threshold(
    competition: Competition = None,
    overrides: Overrides = None,
    model: Models = None,
    trials: Annotated[int, typer.Option("--trials", help="Each model's study's total of complete trials, shared by "
                                        "every process tuning it (a study that holds them is only re-read).")] = 50,
    storage: Storage = None,
    study: Annotated[
        str | None,
        typer.Option("--study", help="Study name (default: <slug>.<model>.<candidates>.<hash of the search space "
                     "and the OOF neighbours>)."),
    ] = None,
    candidates: Annotated[
        str, typer.Option("--candidates", metavar="<all|fold>",
                          help="match: search OOF queries against all training rows or only their fold's.")
    ] = "all",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the TPE sampler.")] = 0,
    knn: Knn = None,
    force: Annotated[bool, typer.Option("--force", help="Re-read the study (tuning it up to --trials) and rewrite "
                                        "the parameters and plot even when they are fresh; to add trials, raise "
                                        "--trials.")] = False,
    workspace: WorkspaceBase = None,
) -> None:
    """Tune each model's post-processing on its OOF neighbours with Optuna; write the best parameters.

    --trials is the study's total: several processes (or machines, with --storage postgresql://...) running
    this command on one study end it with exactly that many complete trials. A model whose parameters are
    fresh and tuned with at least --trials trials is kept as it is unless --force.
    """
    from compkit.tuning.study import tune_model

    config = open_config(competition, overrides, model, knn=knn)
    space = Workspace.for_competition(config.slug, workspace)
    models = [config.model(name) for name in model_names(model)] or list(config.models)
    table = Table("model", "OOF score (tuned)", "trivial answer", "default threshold", "other candidates", "parameters",
                  "trials",
                  title=f"{config.slug}: tuned on OOF predictions")
    results = []
    with RichProgress() as progress:
        for entry in models:
            results.append(tune_model(config, space, entry, trials=trials, storage=storage, study_name=study,
                                      candidates=candidates, seed=seed, skip_fresh=not force, progress=progress))
    for result in results:
        other = "-" if result.other_candidates_score is None else f"{result.other_candidates_score:.4f}"
        trivial = "-" if result.trivial_score is None else f"{result.trivial_score:.4f}"
        table.add_row(result.model, f"{result.oof_score:.4f}", trivial, f"{result.default_score:.4f}", other,
                      json.dumps({k: v if isinstance(v, bool) else round(v, 4) for k, v in result.params.items()}),
                      f"{result.n_trials} (fresh, kept)" if result.skipped else str(result.n_trials))
    stdout.print(table)
    for result in results:
        if not result.skipped:
            stderr.print(f"{result.model}: {result.trials_run} of study {result.study}'s {result.n_trials} complete "
                         "trials ran here", highlight=False)
    stderr.print(f"parameters and plots in {space.tuning_dir}", highlight=False)


def predict(
    competition: Competition = None,
    overrides: Overrides = None,
    model: Models = None,
    knn: Knn = None,
    force: Force = False,
    workspace: WorkspaceBase = None,
) -> None:
    """Write submissions/<model>.csv (test) and oof/<model>.csv with each model's tuned parameters."""
    from compkit.predict import predict_model

    config = open_config(competition, overrides, model, knn=knn)
    space = Workspace.for_competition(config.slug, workspace)
    models = [config.model(name) for name in model_names(model)] or list(config.models)
    table = Table("model", "submission", "test rows", "oof rows", "", title=f"{config.slug}: predictions")
    for entry in models:
        result = predict_model(config, space, entry, force=force)
        table.add_row(result.model, str(result.submission), str(result.test_rows), str(result.oof_rows),
                      "fresh, kept" if result.skipped else "written")
    stdout.print(table)
