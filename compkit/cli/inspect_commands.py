"""`compkit inspect` (a model's error report as a static HTML page) and `compkit history` (every result kept)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from compkit.cli.console import handle_errors, stderr, stdout
from compkit.cli.options import AsJson, Competition, Overrides, WorkspaceBase, open_config
from compkit.config import model_names
from compkit.history import read_history
from compkit.workspace import Workspace


def register(app: typer.Typer) -> None:
    app.command("inspect")(handle_errors(inspect))
    app.command("history")(handle_errors(history))


def inspect(
    competition: Competition = None,
    overrides: Overrides = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", metavar="NAME[,NAME...]", help="The models to report on, one report each (repeat, "
                     "or separate with commas). Default: the one with the best tuned OOF score.", show_default=False),
    ] = None,
    examples: Annotated[int, typer.Option("--examples", help="Worst examples shown in each section.")] = 24,
    workspace: WorkspaceBase = None,
) -> None:
    """Write reports/<model>/index.html: where the model is wrong on its OOF predictions (open it in a browser).

    match: per-fold scores, score by group size, the worst false and missed matches (images and titles).

    identify: MAP@5 per species and fold, new_individual precision and recall, the top-1 errors with thumbnails.

    Default model: the one with the best tuned OOF score.
    """
    from compkit.report.build import write_report

    config = open_config(competition, overrides, model)
    space = Workspace.for_competition(config.slug, workspace)
    for name in model_names(model) or [None]:
        report = write_report(config, space, model=name, examples=examples)
        missing = f", {report.missing_images} images unreadable" if report.missing_images else ""
        stderr.print(escape(f"{report.model}: sections {', '.join(report.sections)}; {report.images} thumbnails"
                            f"{missing}; {report.seconds:.1f} s"), highlight=False)
        stdout.print(str(report.path), highlight=False)


def history(
    competition: Competition = None,
    overrides: Overrides = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", metavar="NAME[,NAME...]", help="Only these models' tunings ('ensemble': the "
                     "ensemble's).", show_default=False),
    ] = None,
    as_json: AsJson = False,
    workspace: WorkspaceBase = None,
) -> None:
    """Show every tuning and ensemble result, oldest first: time, what changed, OOF score, which was kept."""
    config = open_config(competition, overrides)
    space = Workspace.for_competition(config.slug, workspace)
    wanted = set(model_names(model))
    entries = [entry for entry in read_history(space) if not wanted or entry.subject in wanted]
    if as_json:
        stdout.print(json.dumps([asdict(entry) for entry in entries]), highlight=False, soft_wrap=True)
        return
    if not entries:
        stderr.print(f"no results recorded in {space.history_path} yet (tune-threshold and ensemble --tune add them)",
                     highlight=False)
        return
    table = Table(title=f"{config.slug}: results history ({entries[0].metric})")
    for column in ("time (UTC)", "result", "what changed", "OOF score", "in effect", "verdict"):
        table.add_column(column, no_wrap=column in ("time (UTC)", "OOF score", "in effect"))
    for entry in entries:
        what = "ensemble" if entry.kind == "ensemble" else f"tune {entry.subject}"
        if entry.kind == "ensemble":
            what += f" ({entry.settings.get('select', '?')})"
        verdict = entry.verdict + (", previous kept" if entry.kept == "previous" else "")
        style = "yellow" if entry.verdict == "worse" else None
        table.add_row(entry.when, escape(what), escape(entry.changed), f"{entry.score:.6f}",
                      f"{entry.current:.6f}", verdict, style=style)
    stdout.print(table)
