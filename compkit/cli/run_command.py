"""`compkit run`: the whole pipeline in one command, skipping every fresh stage."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from compkit.cli.console import RichProgress, handle_errors, stderr, stdout
from compkit.cli.options import Competition, Knn, WorkspaceBase
from compkit.cli.submit_commands import Message, Wait, WaitTimeout, submit_file
from compkit.config import load_config, with_knn_backend
from compkit.workspace import Workspace


def register(app: typer.Typer) -> None:
    app.command("run")(handle_errors(run))


def run(
    competition: Competition,
    trials: Annotated[int, typer.Option("--trials", help="Tuning trials added per model.")] = 50,
    jobs: Annotated[int, typer.Option("--jobs", help="Parallel training workers.")] = 1,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    submit: Annotated[
        bool, typer.Option("--submit", help="Then submit the ensemble (or the only model's CSV) to Kaggle.")
    ] = False,
    message: Message = None,
    wait: Wait = False,
    timeout: WaitTimeout = 900.0,
    knn: Knn = None,
    verify: Annotated[bool, typer.Option("--verify", help="First hash every artifact against its manifest and "
                                         "remake those whose files changed.")] = False,
    workspace: WorkspaceBase = None,
) -> None:
    """Fetch, make folds, train, tune, predict and ensemble; print OOF (and, with a solution, test) scores.

    With --submit the final CSV is then submitted as `compkit submit` does (--message, --wait, --timeout).
    """
    from compkit.pipeline import run_pipeline

    config = with_knn_backend(load_config(competition), knn)
    space = Workspace.for_competition(config.slug, workspace)
    with RichProgress() as progress:
        report = run_pipeline(
            config, space, trials=trials, device=device, jobs=jobs, verify=verify, progress=progress,
            on_stage=lambda stage, outcome: progress.log(f"[bold]{stage}[/]: {outcome}"),
        )
    for path, reason in report.set_aside:
        stderr.print(f"[yellow]damaged:[/] {escape(reason)}; set aside as {escape(path.name)} and made again",
                     highlight=False)
    table = Table("model", "OOF score (tuned)", "test score", title=f"{config.slug}: scores")
    for name, score in report.oof_scores.items():
        if name != "ensemble":
            test = report.test_scores.get(name)
            table.add_row(name, f"{score:.6f}", "-" if test is None else f"{test:.6f}")
    if report.ensemble is not None:
        test, oof = report.test_scores.get("ensemble"), report.oof_scores.get("ensemble")
        table.add_row("ensemble", "-" if oof is None else f"{oof:.6f}", "-" if test is None else f"{test:.6f}")
    stdout.print(table)
    if not report.made:
        stderr.print("nothing to do: every stage is fresh", highlight=False)
    if report.ensemble is not None:
        stderr.print(f"ensemble submission: {report.ensemble}", highlight=False)
        final = report.test_scores.get("ensemble")
        if final is not None:
            stdout.print(f"{final:.6f}", highlight=False)
    if submit:
        final_csv = report.ensemble or space.submission_csv(config.models[0].name)
        submit_file(config, space, file=final_csv, message=message, dry_run=False, wait=wait, timeout=timeout)
