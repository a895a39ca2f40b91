"""`compkit ensemble`: combine two or more CSVs in the competition's submission format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from compkit.cli.console import RichProgress, handle_errors, stderr, stdout
from compkit.cli.options import Competition, Force, Overrides, Storage, WorkspaceBase, open_config
from compkit.errors import ParameterError
from compkit.workspace import Workspace

# The library's parameters that are not `--<parameter>` here.
FLAGS = {"csvs": "CSVS", "members": "--model"}


def register(app: typer.Typer) -> None:
    app.command("ensemble")(handle_errors(ensemble, flags=FLAGS))


def ensemble(
    competition: Competition = None,
    overrides: Overrides = None,
    csvs: Annotated[
        list[Path] | None, typer.Argument(help="CSVs to combine (default: every model's test CSV).")
    ] = None,
    method: Annotated[
        str | None,
        typer.Option("--method", metavar="<vote|rank|concat|score>",
                     help="vote (match) or rank (identify) combine the CSVs; concat (match or identify) or score "
                     "(identify) combine the models' embeddings (default: vote for match, rank for identify)."),
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option("--weights", help="Comma-separated weight per CSV (default: the tuned ones, else equal)."),
    ] = None,
    vote_threshold: Annotated[
        float | None,
        typer.Option("--vote-threshold",
                     help="match: keep pairs with this share of the weight (default: the tuned one, else 0.5)."),
    ] = None,
    tune: Annotated[
        bool, typer.Option("--tune", help="First tune the weights (and vote threshold) on the models' OOF CSVs.")
    ] = False,
    select: Annotated[
        str, typer.Option("--select", metavar="<optuna|greedy>",
                        help="With --tune: optuna, or greedy (Caruana's forward selection).")
    ] = "optuna",
    trials: Annotated[int, typer.Option("--trials", help="With --select optuna: the study's total of complete "
                                        "trials, shared by every process tuning it.")] = 200,
    rounds: Annotated[int, typer.Option("--rounds", help="With --select greedy: selection rounds.")] = 25,
    storage: Storage = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="concat/score: a model to combine (repeat; default: every embedding model)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Where to write the ensemble (default: submissions/ensemble.csv)."),
    ] = None,
    force: Force = False,
    workspace: WorkspaceBase = None,
) -> None:
    """Combine submission CSVs (validated first) into one, by weighted votes or reciprocal ranks.

    Without CSVs, --weights or --vote-threshold, the tuned weights of tuning/ensemble.json are used while fresh.
    """
    from compkit.ensemble.final import make_ensemble  # late, like every command's library: `--help` stays fast
    from compkit.ensemble.weights import solution_scores

    config = open_config(competition, overrides)
    space = Workspace.for_competition(config.slug, workspace)
    with RichProgress() as progress:
        made = make_ensemble(config, space, csvs, method=method, weights=_parse_weights(weights),
                             vote_threshold=vote_threshold, tune=tune, select=select, trials=trials, rounds=rounds,
                             members=model, output=output, storage=storage, force=force, progress=progress)
    if made.embedding is not None:
        tuned = made.embedding.tuned
        stderr.print(escape(f"{made.method} of {', '.join(made.models)}: OOF {tuned.oof_score:.6f} (default "
                            f"parameters {tuned.default_score:.6f}), parameters in {tuned.path}"), highlight=False)
        stdout.print(str(made.path), highlight=False)
        return
    if made.tuned is not None and made.tuned.choice is not None:
        stderr.print(escape(made.tuned.choice.summary()), highlight=False)
    elif made.tuned is not None and not tune:
        stderr.print(escape(f"using the tuned weights of {made.tuned.path} ({made.tuned.select}, "
                            f"OOF {made.tuned.score:.6f})"), highlight=False)
    weights_text = ", ".join(f"{weight:.4g}" for weight in made.weights)
    reused = f" ({made.path.name} was fresh: left as it was)" if made.reused else ""
    stderr.print(escape(f"{made.method} of {len(made.models)} CSVs, weights {weights_text}{reused}"), highlight=False)
    paths = [Path(path) for path in csvs] if csvs else [space.submission_csv(name) for name in made.models]
    test = solution_scores(config, space, {**dict(zip(made.models, paths, strict=True)), "ensemble": made.path})
    _print_scores(config, made, test)
    stdout.print(str(made.path), highlight=False)


def _print_scores(config, made, test: dict[str, float]) -> None:
    """Print every input's weight, OOF score (when tuned) and test score (when there is a solution)."""
    if made.tuned is None and not test:
        return
    table = Table("model", "weight", "OOF score", "test score", title=f"{config.slug}: ensemble ({made.method})")
    for name, weight in zip(made.models, made.weights, strict=True):
        table.add_row(name, f"{weight:.4g}", _score(made.oof_scores.get(name)), _score(test.get(name)))
    table.add_section()
    threshold = "" if made.vote_threshold is None else f"vote >= {made.vote_threshold:.4g}"
    table.add_row("ensemble", threshold, _score(made.oof_scores.get("ensemble")), _score(test.get("ensemble")),
                  style="bold")
    stdout.print(table)


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"


def _parse_weights(weights: str | None) -> list[float] | None:
    if weights is None:
        return None
    try:
        return [float(value) for value in weights.split(",")]
    except ValueError:
        raise ParameterError("weights", weights, "must be comma-separated numbers") from None
