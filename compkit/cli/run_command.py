"""`compkit run`: the whole pipeline in one command, skipping every fresh stage."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Column, Table

from compkit.cli.console import RichProgress, handle_errors, stderr, stdout
from compkit.cli.options import (
    Competition,
    DataSourceName,
    InPlace,
    Knn,
    LocalPath,
    Models,
    Overrides,
    Scheduler,
    Storage,
    WorkspaceBase,
    open_config,
)
from compkit.cli.submit_commands import Message, Wait, WaitTimeout, submit_file
from compkit.workspace import Workspace


def _score_cells(oof: float | None, test: float | None) -> tuple[str, str, str]:
    """Return the OOF, test and gap cells of a model's row ("-" where a score is missing)."""
    gap = "-" if oof is None or test is None else f"{oof - test:+.4f}"
    return ("-" if oof is None else f"{oof:.6f}"), ("-" if test is None else f"{test:.6f}"), gap


def _kind_table(config, rows, default_share: float | None = None) -> Table | None:
    """Return the identify table of each model's MAP@5 on seen and new_individual queries, OOF and test; the
    shares of new queries (one per side: they depend on the truth, not the model) are in its title. With
    `default_share` (folds made with a group or unseen_fraction), a column mixes OOF at the default scheme's."""
    from compkit.oof_gap import new_share_of_test

    if not rows:
        return None
    share = new_share_of_test(config, rows)
    oof_share = next((row.oof.new_share for row in rows if row.oof is not None), None)
    shares = [f"{side} {value:.1%}" for side, value in (("OOF", oof_share), ("default folds", default_share),
                                                         ("test", share)) if value is not None]
    at = "OOF at test's share" if any(row.test for row in rows) else "OOF at expected share"
    default = [] if default_share is None else ["OOF at default folds' share"]
    table = Table(Column("model", no_wrap=True), "OOF seen", "OOF new", "test seen", "test new", at, *default,
                  title=f"{config.slug}: MAP@5 on seen and new_individual queries (new: {', '.join(shares)})")
    for row in rows:
        oof = [None, None] if row.oof is None else [row.oof.seen, row.oof.new]
        test = [None, None] if row.test is None else [row.test.seen, row.test.new]
        at_default = [] if default_share is None else [row.oof_at(default_share)]
        table.add_row(row.model, *map(_cell, oof + test + [row.oof_at(share)] + at_default))
    return table


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def register(app: typer.Typer) -> None:
    app.command("run")(handle_errors(run))


def run(
    competition: Competition = None,
    overrides: Overrides = None,
    models: Models = None,
    trials: Annotated[int, typer.Option("--trials", help="Each model's tuning study's total of complete "
                                     "trials; the ensemble's study runs four times as many.")] = 50,
    jobs: Annotated[int, typer.Option("--jobs", help="Parallel training workers.")] = 1,
    device: Annotated[str, typer.Option("--device", metavar="<auto|cpu|cuda>", help="Where to train: auto (CUDA "
                                        "when torch sees a GPU), cpu or cuda.")] = "auto",
    submit: Annotated[
        bool, typer.Option("--submit", help="Then submit the ensemble (or the only model's CSV) to Kaggle.")
    ] = False,
    message: Message = None,
    wait: Wait = False,
    timeout: WaitTimeout = 900.0,
    knn: Knn = None,
    verify: Annotated[bool, typer.Option("--verify", help="First hash every artifact against its manifest and "
                                         "remake those whose files changed.")] = False,
    source: DataSourceName = None,
    path: LocalPath = None,
    in_place: InPlace = None,
    scheduler: Scheduler = None,
    storage: Storage = None,
    workspace: WorkspaceBase = None,
) -> None:
    """Fetch, make folds, train, tune, predict and ensemble; print OOF (and, with a solution, test) scores.

    With --submit the final CSV is then submitted as `compkit submit` does (--message, --wait, --timeout).
    --source/--path/--in-place choose where missing or changed data is fetched from, as `compkit fetch` does
    (default: the local folder it was fetched from, else the config's source); data that is intact is used as
    it is, without asking Kaggle. With --scheduler, training, embedding and dense kNN searches run as tasks
    on that Dask cluster; with --storage, tuning uses that database.
    """
    from compkit.data.fetch import with_data_source, with_recorded_source
    from compkit.pipeline import run_pipeline

    config = open_config(competition, overrides, models, knn=knn)
    if scheduler and not config.neighbors.scheduler:  # the searches shard over the same cluster
        config = dataclasses.replace(config, neighbors=dataclasses.replace(config.neighbors, scheduler=scheduler))
    space = Workspace.for_competition(config.slug, workspace)
    if submit:
        from compkit.submit.upload import refuse_code_competition

        refuse_code_competition(config)  # before the run, not after it
    if source is None and path is None and in_place is None:
        config = with_recorded_source(config, space)  # data fetched from a local folder is refreshed from it
    else:
        config = with_data_source(config, source=source, path=path, in_place=in_place)
    with RichProgress() as progress:
        report = run_pipeline(
            config, space, trials=trials, device=device, jobs=jobs, verify=verify, scheduler=scheduler,
            storage=storage, progress=progress,
            on_stage=lambda stage, outcome: progress.log(f"[bold]{stage}[/]: {outcome}"),
        )
    for path, reason in report.set_aside:
        stderr.print(f"[yellow]damaged:[/] {escape(reason)}; set aside as {escape(path.name)} and made again",
                     highlight=False)
    table = Table(Column("model", no_wrap=True), "OOF (tuned)", Column("OOF (cross-fitted)", min_width=14), "test",
                  "test SE", "OOF - test", title=f"{config.slug}: scores")
    names = [name for name in report.oof_scores if name != "ensemble"]
    for name in names + (["ensemble"] if report.ensemble is not None else []):
        oof, test, gap = _score_cells(report.oof_scores.get(name), report.test_scores.get(name))
        cross, error = report.cross_fitted_scores.get(name), report.test_errors.get(name)
        table.add_row(name, oof, "-" if cross is None else f"{cross:.6f}", test,
                      "-" if error is None else f"{error:.4f}", gap)
    stdout.print(table)
    margin = report.ensemble_margin
    if margin is not None:
        stdout.print(f"test: {margin.a} - best single model ({margin.b}) = {margin.difference:+.4f}, standard error "
                     f"{margin.standard_error:.4f} (paired over {margin.n_rows} rows)", highlight=False)
    kinds = _kind_table(config, report.by_kind, report.default_new_share)
    if kinds is not None:
        stdout.print(kinds)
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
