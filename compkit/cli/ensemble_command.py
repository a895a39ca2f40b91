"""`compkit ensemble`: combine two or more CSVs in the competition's submission format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from compkit.cli.console import handle_errors, stderr, stdout
from compkit.cli.options import Competition, WorkspaceBase
from compkit.config import load_config
from compkit.errors import ConfigError
from compkit.workspace import Workspace, write_csv


def register(app: typer.Typer) -> None:
    app.command("ensemble")(handle_errors(ensemble))


def ensemble(
    competition: Competition,
    csvs: Annotated[
        list[Path] | None, typer.Argument(help="CSVs to combine (default: every model's test CSV).")
    ] = None,
    method: Annotated[str | None, typer.Option("--method", help="vote (match) or rank (identify).")] = None,
    weights: Annotated[str | None, typer.Option("--weights", help="Comma-separated weight per CSV.")] = None,
    vote_threshold: Annotated[
        float, typer.Option("--vote-threshold", help="match: keep pairs with at least this share of the weight.")
    ] = 0.5,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Where to write the ensemble.")] = None,
    workspace: WorkspaceBase = None,
) -> None:
    """Combine submission CSVs (validated first) into one, by weighted votes or reciprocal ranks."""
    from compkit.data import load_test
    from compkit.ensemble import ensemble as combine

    config = load_config(competition)
    space = Workspace.for_competition(config.slug, workspace)
    paths = list(csvs) if csvs else _model_csvs(config, space)
    weight_values = _parse_weights(weights)
    expected_ids = load_test(config, space)[config.columns.id].tolist()
    result = combine(config, paths, expected_ids=expected_ids, method=method, weights=weight_values,
                     vote_threshold=vote_threshold)
    target = output or space.submission_csv("ensemble")
    write_csv(target, result.frame)
    stderr.print(escape(f"{result.method} of {len(paths)} CSVs, weights {list(result.weights)}"), highlight=False)
    stdout.print(str(target), highlight=False)


def _model_csvs(config, space: Workspace) -> list[Path]:
    found = [space.submission_csv(m.name) for m in config.models if space.submission_csv(m.name).is_file()]
    if len(found) < 2:
        raise ConfigError(f"found {len(found)} model CSVs in {space.root / 'submissions'}: run compkit predict "
                          f"-c {config.slug} first, or pass the CSVs to combine")
    return found


def _parse_weights(weights: str | None) -> list[float] | None:
    if weights is None:
        return None
    try:
        return [float(value) for value in weights.split(",")]
    except ValueError:
        raise ConfigError(f"--weights must be comma-separated numbers, got {weights!r}") from None
