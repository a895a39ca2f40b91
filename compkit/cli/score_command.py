"""`compkit score`: validate a submission and compute the competition's metric."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from compkit.cli.console import handle_errors, stdout
from compkit.cli.options import AsJson, Competition, Overrides, WorkspaceBase, open_config
from compkit.workspace import Workspace


def register(app: typer.Typer) -> None:
    app.command("score")(handle_errors(score))


def score(
    submission: Annotated[Path, typer.Argument(help="The submission CSV to score.")],
    competition: Competition = None,
    overrides: Overrides = None,
    solution: Annotated[
        Path | None, typer.Option("--solution", help="Truth CSV (default: the competition's solution file).")
    ] = None,
    as_json: AsJson = False,
    workspace: WorkspaceBase = None,
) -> None:
    """Score SUBMISSION exactly as Kaggle does (mean row-wise F1, or MAP@5)."""
    from compkit.scoring import score_submission

    config = open_config(competition, overrides)
    space = Workspace.for_competition(config.slug, workspace)
    result = score_submission(config, space, submission, solution_path=solution)
    if as_json:
        payload = {"competition": config.slug, "metric": result.metric, "score": result.score, "rows": result.n_rows}
        stdout.print(json.dumps(payload), highlight=False)
    else:
        stdout.print(f"{result.metric} over {result.n_rows} rows", highlight=False)
        stdout.print(f"{result.score:.6f}", highlight=False)
