"""`compkit ensemble`: combine two or more CSVs in the competition's submission format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from compkit.cli.console import RichProgress, handle_errors, stderr, stdout
from compkit.cli.options import Competition, WorkspaceBase
from compkit.config import load_config
from compkit.errors import ConfigError
from compkit.workspace import Workspace


def register(app: typer.Typer) -> None:
    app.command("ensemble")(handle_errors(ensemble))


def ensemble(
    competition: Competition,
    csvs: Annotated[
        list[Path] | None, typer.Argument(help="CSVs to combine (default: every model's test CSV).")
    ] = None,
    method: Annotated[
        str | None,
        typer.Option("--method", help="vote (match), rank (identify); concat or score (identify) of embeddings."),
    ] = None,
    weights: Annotated[str | None, typer.Option("--weights", help="Comma-separated weight per CSV.")] = None,
    vote_threshold: Annotated[
        float | None,
        typer.Option("--vote-threshold",
                     help="match: keep pairs with this share of the weight (default 0.5 or the tuned one)."),
    ] = None,
    tune: Annotated[
        bool, typer.Option("--tune", help="First tune the weights (and vote threshold) on the models' OOF CSVs.")
    ] = False,
    select: Annotated[
        str, typer.Option("--select", help="With --tune: optuna, or greedy (Caruana's forward selection).")
    ] = "optuna",
    trials: Annotated[int, typer.Option("--trials", help="With --select optuna: trials added to the study.")] = 200,
    rounds: Annotated[int, typer.Option("--rounds", help="With --select greedy: selection rounds.")] = 25,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="concat/score: a model to combine (repeat; default: every embedding model)."),
    ] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Where to write the ensemble.")] = None,
    workspace: WorkspaceBase = None,
) -> None:
    """Combine submission CSVs (validated first) into one, by weighted votes or reciprocal ranks.

    Without CSVs, --weights or --vote-threshold, the tuned weights of tuning/ensemble.json are used while fresh.
    """
    from compkit.data.tables import load_test
    from compkit.ensemble.vote import ensemble as combine
    from compkit.ensemble.vote import write_ensemble
    from compkit.ensemble.weights import TUNED_METHODS, ensemble_models, read_tuned_ensemble, tune_ensemble

    config = load_config(competition)
    space = Workspace.for_competition(config.slug, workspace)
    if method in ("concat", "score"):
        _embedding_ensemble(config, space, method, model, _parse_weights(weights), trials, output, csvs or tune)
        return
    names = [path.name for path in csvs] if csvs else _model_names(config, space)
    paths = list(csvs) if csvs else [space.submission_csv(name) for name in names]
    weight_values = _parse_weights(weights)
    tunable = method in (None, TUNED_METHODS[config.task])
    tuned = None
    if tune:
        if csvs or weight_values is not None or vote_threshold is not None or not tunable:
            raise ConfigError("--tune chooses the weights and threshold of the models' own CSVs "
                              f"({TUNED_METHODS[config.task]}): pass no CSVs, --weights, --vote-threshold or --method")
        with RichProgress() as progress:
            tuned = tune_ensemble(config, space, names, select=select, trials=trials, rounds=rounds,
                                  progress=progress)
    elif not csvs and weight_values is None and vote_threshold is None and tunable:
        tuned = read_tuned_ensemble(config, space, ensemble_models(config, space))
        if tuned is not None:
            stderr.print(escape(f"using the tuned weights of {tuned.path} ({tuned.select}, OOF {tuned.score:.6f})"),
                         highlight=False)
    if tuned is not None:
        options = tuned.ensemble_options()
    else:
        options = {"method": method, "weights": weight_values}
        if vote_threshold is not None:
            options["vote_threshold"] = vote_threshold
    expected_ids = load_test(config, space)[config.columns.id].tolist()
    result = combine(config, paths, expected_ids=expected_ids, **options)
    target = output or space.submission_csv("ensemble")
    write_ensemble(target, result, paths)
    weights_text = ", ".join(f"{weight:.4g}" for weight in result.weights)
    stderr.print(escape(f"{result.method} of {len(paths)} CSVs, weights {weights_text}"), highlight=False)
    _print_scores(config, space, names, paths, target, result, tuned)
    stdout.print(str(target), highlight=False)


def _print_scores(config, space: Workspace, names: list[str], paths: list[Path], target: Path, result, tuned) -> None:
    """Print every input's weight, OOF score (when tuned) and test score (when there is a solution)."""
    from compkit.ensemble.weights import solution_scores

    test = solution_scores(config, space, {**dict(zip(names, paths, strict=True)), "ensemble": target})
    if tuned is None and not test:
        return
    oof = tuned.model_scores if tuned is not None else {}
    table = Table("model", "weight", "OOF score", "test score", title=f"{config.slug}: ensemble ({result.method})")
    for name, weight in zip(names, result.weights, strict=True):
        table.add_row(name, f"{weight:.4g}", _score(oof.get(name)), _score(test.get(name)))
    table.add_section()
    threshold = "" if result.vote_threshold is None else f"vote >= {result.vote_threshold:.4g}"
    table.add_row("ensemble", threshold, _score(tuned.score if tuned else None), _score(test.get("ensemble")),
                  style="bold")
    stdout.print(table)


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"


def _model_names(config, space: Workspace) -> list[str]:
    from compkit.ensemble.weights import ensemble_models

    found = ensemble_models(config, space)
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


def _embedding_ensemble(config, space: Workspace, method: str, models, weights, trials: int, output, misused) -> None:
    """--method concat|score: tune and predict the embedding-level ensemble of the models' cached embeddings."""
    from compkit.ensemble.embedding_level import embedding_ensemble
    from compkit.ensemble.vote import ensemble_csv_inputs
    from compkit.workspace import write_bytes, write_manifest

    if misused:
        raise ConfigError(f"--method {method} combines the models' embeddings, not CSVs: name them with --model "
                          "(its weights and thresholds are always tuned on OOF; --tune and CSVs do not apply)")
    with RichProgress() as progress:
        result = embedding_ensemble(config, space, method=method, members=models, weights=weights, trials=trials,
                                    progress=progress)
    target = output or space.submission_csv("ensemble")
    write_bytes(target, result.predicted.submission.read_bytes())
    write_manifest(target, ensemble_csv_inputs([result.predicted.submission], {"method": method}))
    tuned = result.tuned
    stderr.print(escape(f"{method} of {', '.join(result.model.members)}: OOF {tuned.oof_score:.6f} "
                        f"(default parameters {tuned.default_score:.6f}), parameters in {tuned.path}"), highlight=False)
    stdout.print(str(target), highlight=False)
