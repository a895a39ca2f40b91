"""`compkit submit` and `compkit submissions`: upload to Kaggle (or push a kernel), and the ledger of attempts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from compkit.cli.console import RichProgress, handle_errors, stderr, stdout
from compkit.cli.options import AsJson, Competition, Models, Overrides, WorkspaceBase, open_config
from compkit.config import project_competition, resolve_config_path
from compkit.workspace import Workspace

STATUS_STYLES = {"complete": "green", "pending": "yellow", "uploading": "yellow", "pushed": "cyan",
                 "error": "red", "failed": "red", "interrupted": "red", "unknown": "red"}

Message = Annotated[
    str | None, typer.Option("-m", "--message", help="Submission description (default: what it is and its CV).")
]
Wait = Annotated[bool, typer.Option("--wait", help="Wait for Kaggle to score the submission and print the score.")]
WaitTimeout = Annotated[float, typer.Option("--timeout", help="Seconds --wait waits for the score.")]


def register(app: typer.Typer) -> None:
    app.command("submit")(handle_errors(submit))
    app.command("submissions")(handle_errors(submissions))


def submit(
    competition: Competition = None,
    overrides: Overrides = None,
    models: Models = None,
    file: Annotated[
        Path | None,
        typer.Option("-f", "--file", help="CSV to submit (default: the ensemble, or the only model's CSV)."),
    ] = None,
    message: Message = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and show what would be uploaded or pushed; no network.")
    ] = False,
    wait: Wait = False,
    timeout: WaitTimeout = 900.0,
    kernel: Annotated[
        bool, typer.Option("--kernel", help="Code competition: write an offline kernel folder and push it.")
    ] = False,
    kernel_id: Annotated[
        str | None, typer.Option("--kernel-id", help="--kernel: the kernel as OWNER/SLUG on Kaggle.")
    ] = None,
    wheels_dataset: Annotated[
        str | None,
        typer.Option("--wheels-dataset", help="--kernel: dataset holding the wheels (OWNER/compkit-wheels)."),
    ] = None,
    weights_dataset: Annotated[
        str | None,
        typer.Option("--weights-dataset", help="--kernel: dataset holding the weights (OWNER/compkit-<slug>-weights)."),
    ] = None,
    extra_wheels: Annotated[
        list[Path] | None, typer.Option("--wheel", help="--kernel: another wheel to install offline (repeatable).")
    ] = None,
    placeholder_rows: Annotated[
        int, typer.Option("--placeholder-rows", help="--kernel: a visible test set of at most this many rows is "
                                                     "Kaggle's placeholder: the kernel then predicts and scores the "
                                                     "training set.")
    ] = 3,
    workspace: WorkspaceBase = None,
) -> None:
    """Validate a submission CSV, upload it to Kaggle and record it in the ledger (or push a kernel)."""
    config = open_config(competition, overrides, models)
    space = Workspace.for_competition(config.slug, workspace)
    if kernel:
        _submit_kernel(competition, overrides, config, space, kernel_id=kernel_id, wheels_dataset=wheels_dataset,
                       weights_dataset=weights_dataset, extra_wheels=extra_wheels or [],
                       placeholder_rows=placeholder_rows, message=message, dry_run=dry_run)
        return
    submit_file(config, space, file=file, message=message, dry_run=dry_run, wait=wait, timeout=timeout)


def submit_file(config, space: Workspace, *, file: Path | None, message: str | None, dry_run: bool, wait: bool,
                timeout: float) -> None:
    """Plan, upload and (with `wait`) follow one submission, printing as `compkit submit` does."""
    from compkit.submit.upload import PollPolicy, plan_submission, submit, wait_for_score

    plan = plan_submission(config, space, path=file, message=message)
    cv = "-" if plan.cv_score is None else f"{plan.cv_score:.6f}"
    what = f"{plan.path} ({plan.rows} rows, sha256 {plan.sha256[:12]}, CV {cv})"
    if dry_run:
        stdout.print(escape(f"would submit {what} to Kaggle competition {plan.competition!r} with message "
                            f"{plan.message!r}"), highlight=False)
        return
    with RichProgress() as progress:
        result = submit(plan, space, log=progress.log)
        remaining = "" if result.remaining_today is None else f"; {result.remaining_today} submissions left today"
        stderr.print(escape(f"submitted {what} to {plan.competition!r} as ref {result.ref}: "
                            f"{result.kaggle_message}{remaining}"), highlight=False)
        if wait:
            result = wait_for_score(result, space, poll=PollPolicy(timeout=timeout), log=progress.log)
    if wait:
        stderr.print(f"public score of submission {result.ref}:", highlight=False)
        stdout.print(result.public_score, highlight=False)
    else:
        stdout.print(str(result.ref), highlight=False)


def submissions(
    competition: Competition = None,
    overrides: Overrides = None,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Ask Kaggle for the scores of pending submissions, and what became "
                                             "of uploads a killed submit left, first.")
    ] = False,
    as_json: AsJson = False,
    workspace: WorkspaceBase = None,
) -> None:
    """Show the ledger: every submission attempt with its CV (OOF) score next to Kaggle's public score."""
    from compkit.submit.ledger import read_ledger
    from compkit.submit.upload import refresh_ledger

    config = open_config(competition, overrides)
    space = Workspace.for_competition(config.slug, workspace)
    if refresh:
        with RichProgress() as progress:
            changed = refresh_ledger(space, log=progress.log)
        stderr.print(f"{changed} pending submissions updated from Kaggle", highlight=False)
    ledger = read_ledger(space)
    if as_json:
        stdout.print(json.dumps(ledger.to_dict(orient="records")), highlight=False)
        return
    table = Table(title=f"{config.slug}: submissions ({space.ledger_path})")
    gaps = [_gap(row.cv_score, row.public_score) for row in ledger.itertuples(index=False)]
    with_gaps = any(gap != "-" for gap in gaps)
    columns = ("submitted (UTC)", "what", "CV (OOF)", "public") + (("public - CV",) if with_gaps else ()) + ("status",)
    for column in columns:
        table.add_column(column, no_wrap=True)
    table.add_column("message / error")
    for row, gap in zip(ledger.itertuples(index=False), gaps, strict=True):
        style = STATUS_STYLES.get(row.status, "")
        note = " / ".join(text for text in (row.message, row.error) if text)
        table.add_row(row.submitted_at[:16].replace("T", " "), escape(row.model or Path(row.file).name),
                      f"{float(row.cv_score):.6f}" if row.cv_score else "-", row.public_score or "-",
                      *((gap,) if with_gaps else ()), f"[{style}]{row.status}[/]" if style else row.status,
                      escape(note))
    stdout.print(table)


def _gap(cv_score, public_score) -> str:
    """Return public minus CV as text ("-" unless both scores are numbers): how far OOF misjudges the test."""
    try:
        gap = float(public_score) - float(cv_score)
    except (TypeError, ValueError):
        return "-"
    return "-" if gap != gap else f"{gap:+.4f}"


def _submit_kernel(competition: str | None, overrides: list[str] | None, config, space: Workspace, *,
                   kernel_id: str | None, wheels_dataset: str | None,
                   weights_dataset: str | None, extra_wheels: list[Path], placeholder_rows: int, message: str | None,
                   dry_run: bool) -> None:
    """Write the kernel folder, then (unless dry_run) push it, printing where it is and what Kaggle said."""
    from compkit.submit.kernel import kernel_spec, push_kernel, write_kernel

    spec = kernel_spec(kernel_id=kernel_id, wheels_dataset=wheels_dataset, weights_dataset=weights_dataset,
                       placeholder_rows=placeholder_rows, extra_wheels=extra_wheels, slug=config.slug)
    folder = write_kernel(config, space, spec, config_path=resolve_config_path(competition or project_competition()),
                          overrides=overrides or ())
    stderr.print(escape(f"kernel {spec.kernel_id} written to {folder.notebook}; its datasets {spec.wheels_dataset} "
                        f"and {spec.weights_dataset} to {folder.wheels} and {folder.weights}"), highlight=False)
    if dry_run:
        stdout.print(escape(f"would push {folder.notebook} as kernel {spec.kernel_id} (internet off, GPU on)"),
                     highlight=False)
        return
    with RichProgress() as progress:
        pushed = push_kernel(config, space, spec, message=message, log=progress.log)
    stderr.print(escape(f"pushed kernel {spec.kernel_id} version {pushed.version}: once it has run, submit its "
                        f"submission.csv from {pushed.url}"), highlight=False)
    stdout.print(pushed.url, highlight=False)
