"""Commands that set a competition up: competitions, init, fetch, check, folds, status."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from compkit.cli.console import RichProgress, fail, handle_errors, stderr, stdout
from compkit.cli.options import (
    AsJson,
    Competition,
    DataSourceName,
    Force,
    InPlace,
    LocalPath,
    Models,
    Overrides,
    WorkspaceBase,
    open_config,
)
from compkit.config import available_competitions, load_config, resolve_config_path
from compkit.errors import CompkitError, ConfigError
from compkit.scaffold import init_competition
from compkit.workspace import Workspace

STATE_STYLES = {"fresh": "green", "stale": "yellow", "present": "cyan", "missing": "dim", "damaged": "red"}


def register(app: typer.Typer) -> None:
    app.command("competitions")(handle_errors(competitions))
    app.command("init")(handle_errors(init))
    app.command("fetch")(handle_errors(fetch))
    app.command("check")(handle_errors(check))
    app.command("folds")(handle_errors(folds))
    app.command("status")(handle_errors(status))


def competitions() -> None:
    """List the competitions compkit can find (./competitions first, then the shipped ones).

    A config that does not load is named on stderr, one line each, and the others are listed; the exit code
    is 1 only when configs were found and none of them loads.
    """

    table = Table("slug", "task", "source", "config")
    slugs, broken = available_competitions(), []
    for slug in slugs:
        path = resolve_config_path(slug)
        try:
            config = load_config(str(path))
        except ConfigError as error:
            broken.append(str(error))
            continue
        except UnicodeDecodeError:
            broken.append(f"{path}: not UTF-8 text")
            continue
        table.add_row(slug, config.task, config.source, str(path))
    stdout.print(table)
    for problem in broken:
        stderr.print(f"[red]broken:[/] {escape(problem)}", highlight=False)
    if slugs and len(broken) == len(slugs):
        fail(f"none of the {len(slugs)} competition configs found loads")


def init(
    slug: Annotated[str, typer.Argument(help="The competition's slug, as in its Kaggle URL.")],
    task: Annotated[
        str | None, typer.Option("--task", metavar="<match|identify>",
                                   help="match (Shopee-style) or identify (Happywhale-style).")
    ] = None,
    copy_of: Annotated[
        str | None, typer.Option("--from", help="Copy this competition's config (e.g. a shipped one) instead.",
                                 show_default=False)
    ] = None,
    directory: Annotated[Path, typer.Option("--dir", help="Folder of competition folders.")] = Path("competitions"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing competition.toml.")] = False,
) -> None:
    """Scaffold competitions/SLUG/competition.toml: the task's standard Kaggle columns, or a copy (--from)."""

    path = init_competition(slug, task, directory=directory, force=force, copy_of=copy_of)
    stderr.print(f"wrote {path}: edit the columns and models, then run `compkit fetch -c {slug}`")
    stdout.print(str(path), highlight=False)


def fetch(
    competition: Competition = None,
    overrides: Overrides = None,
    source: DataSourceName = None,
    path: LocalPath = None,
    in_place: InPlace = None,
    force: Force = False,
    workspace: WorkspaceBase = None,
) -> None:
    """Download (or copy, link in place, or generate) the competition's data into the workspace."""
    from compkit.data.fetch import fetch_competition

    config = open_config(competition, overrides)
    space = Workspace.for_competition(config.slug, workspace)
    with RichProgress() as progress:
        result = fetch_competition(config, space, source=source, path=path, in_place=in_place, force=force,
                                   progress=progress)
    stderr.print(result.message, highlight=False)
    stdout.print(str(result.data_dir), highlight=False)


def check(competition: Competition = None, overrides: Overrides = None, workspace: WorkspaceBase = None) -> None:
    """Check the fetched tables and images against the config, as fetch does before swapping data in."""
    from compkit.data.checks import check_data

    config = open_config(competition, overrides)
    space = Workspace.for_competition(config.slug, workspace)
    with RichProgress() as progress:
        result = check_data(config, space.data_dir, progress=progress)
    stdout.print(result.message, highlight=False)


def folds(
    competition: Competition = None,
    overrides: Overrides = None,
    n_splits: Annotated[int | None, typer.Option("--n-splits", help="Number of folds (default: the config's).")] = None,
    strategy: Annotated[
        str | None, typer.Option("--strategy", metavar="<stratified|group|stratified-group>",
                                   help="How rows are split (default: the config's, else group for match and "
                                   "stratified for identify).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Random seed of the split (default: the config's).")
    ] = None,
    force: Force = False,
    workspace: WorkspaceBase = None,
) -> None:
    """Assign every training row to a fold and print the fold sizes (fresh folds are kept, unless --force)."""
    from compkit.data.folds import build_folds

    config = open_config(competition, overrides)
    space = Workspace.for_competition(config.slug, workspace)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = build_folds(config, space, n_splits=n_splits, strategy=strategy, seed=seed, force=force)
    for warning in caught:
        stderr.print(f"[yellow]warning:[/] {escape(str(warning.message))}", highlight=False)
    summary = result.summary
    table = Table(*[str(c) for c in summary.columns], title=f"{config.slug} folds ({result.strategy})")
    for row in summary.itertuples(index=False):
        table.add_row(*[str(v) for v in row])
    stderr.print(table)
    if config.task == "identify":
        from compkit.data.folds import default_scheme_unseen_share

        targets = [] if result.unseen_fraction is None else [f"folds.unseen_fraction {result.unseen_fraction:.1%}"]
        if (default := default_scheme_unseen_share(config, space)) is not None:
            targets.append(f"default folds {default:.1%}")
        target = f" ({'; '.join(targets)})" if targets else ""
        stderr.print(f"new_individual OOF queries: {result.unseen_share:.1%} of rows{target}", highlight=False)
    if result.unseen_group_share is not None:
        fraction = config.folds.unseen_group_fraction
        target = "every group kept whole" if fraction is None else f"folds.unseen_group_fraction {fraction:.1%}"
        stderr.print(f"seen OOF queries with no row of their {config.folds.group} in another fold: "
                     f"{result.unseen_group_share:.1%} ({target})", highlight=False)
    if not result.written:
        stderr.print("folds already fresh: nothing written (use --force to write them again)", highlight=False)
    stdout.print(str(result.path), highlight=False)


def _print_status_json(config, space: Workspace, entries, command: str | None) -> None:
    stages = [{"stage": entry.stage, "state": entry.state, "artifact": space.relative(entry.artifact),
               "detail": entry.detail} for entry in entries]
    print(json.dumps({"competition": config.slug, "workspace": str(space.root), "stages": stages,
                      "next": command}, indent=2))


def status(
    competition: Competition = None,
    overrides: Overrides = None,
    models: Models = None,
    workspace: WorkspaceBase = None,
    verify: bool = typer.Option(False, "--verify", help="Also hash every artifact's files against its manifest "
                                "(reads them all); exit 1 when one is damaged."),
    as_json: AsJson = False,
) -> None:
    """Show each stage's artifacts: fresh, stale, damaged, present (not judged) or missing."""
    from compkit.stages import next_command
    from compkit.status import stage_statuses

    config = open_config(competition, overrides, models)
    space = Workspace.for_competition(config.slug, workspace)
    table = Table("stage", "state", "artifact", "detail", title=f"{config.slug} ({space.root})")
    entries = stage_statuses(config, space, verify=verify)
    if as_json:
        _print_status_json(config, space, entries, next_command(config, entries))
        if verify and any(entry.state == "damaged" for entry in entries):
            raise typer.Exit(1)
        return
    for entry in entries:
        style = STATE_STYLES[entry.state]
        artifact = entry.artifact
        relative = artifact.relative_to(space.root) if artifact.is_relative_to(space.root) else artifact
        table.add_row(entry.stage, f"[{style}]{entry.state}[/]", str(relative), entry.detail)
    stdout.print(table)
    _warn_on_rankings(config, space)
    command = next_command(config, entries)
    stderr.print(f"next: {command}  (or compkit run -c {config.slug}: every stage that is not fresh)" if command
                 else "every stage is fresh", highlight=False)
    damaged = [entry.stage for entry in entries if entry.state == "damaged"]
    if verify and damaged:
        stderr.print(f"[red]error:[/] {len(damaged)} stages have damaged artifacts ({escape(', '.join(damaged))}); "
                     f"compkit run -c {config.slug} --verify remakes them", highlight=False)
        raise typer.Exit(1)


def _warn_on_rankings(config, space: Workspace) -> None:
    """Print one warning line per pair of ensemble members that CV and the public leaderboard rank apart."""
    from compkit.submit.ledger import ranking_disagreements, read_ledger

    try:
        ledger = read_ledger(space)
    except CompkitError as error:  # status reports, it does not fail
        stderr.print(f"[yellow]warning:[/] {escape(str(error))}", highlight=False)
        return
    for higher, lower in ranking_disagreements(ledger, [model.name for model in config.models]):
        stderr.print(f"[yellow]warning:[/] OOF ranks {escape(higher['model'])} above {escape(lower['model'])} "
                     f"(CV {higher['cv']:.4f} > {lower['cv']:.4f}) but the public leaderboard the other way "
                     f"({higher['public']:.4f} < {lower['public']:.4f}): the ensemble's weights trust OOF",
                     highlight=False)
