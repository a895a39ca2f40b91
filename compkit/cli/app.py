"""The `compkit` command: wires each command module into one Typer app."""

from __future__ import annotations

import typer

from compkit import __version__
from compkit.cli import (
    data_commands,
    ensemble_command,
    inspect_commands,
    run_command,
    score_command,
    submit_commands,
    train_commands,
    tune_commands,
)
from compkit.cli.help_format import HelpGroup, HelpTyper

app = HelpTyper(
    name="compkit",
    help="Run a Kaggle retrieval competition from download to submission.",
    cls=HelpGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"compkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """Run a Kaggle retrieval competition from download to submission."""


data_commands.register(app)
score_command.register(app)
train_commands.register(app)
tune_commands.register(app)
ensemble_command.register(app)
run_command.register(app)
submit_commands.register(app)
inspect_commands.register(app)


def main() -> None:
    app()
