"""Consoles, error mapping and a rich implementation of compkit's progress interface."""

from __future__ import annotations

import errno
import functools
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from compkit.errors import CompkitError, ParameterError
from compkit.progress import PlainProgress, ProgressTask

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, *, code: int = 1) -> None:
    """Print one red line on stderr and exit with `code`."""
    stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def handle_errors(command: F, *, flags: dict[str, str] | None = None) -> F:
    """Turn compkit errors into one red line and exit 1; other exceptions too unless COMPKIT_DEBUG=1.

    A ParameterError is shown with the flag that sets its parameter: `--<parameter>` unless `flags` maps it.
    """
    flags = flags or {}

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return command(*args, **kwargs)
        except ParameterError as error:
            fail(f"{flags.get(error.parameter, '--' + error.parameter.replace('_', '-'))} {error.value}: "
                 f"{error.requirement}")
        except CompkitError as error:
            fail(str(error))
        except KeyboardInterrupt:
            fail("interrupted; finished artifacts are kept and the next run resumes", code=130)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except OSError as error:
            if os.environ.get("COMPKIT_DEBUG") or error.errno not in MACHINE_FAULTS:
                raise
            fail(machine_fault(error))
        except Exception as error:
            if os.environ.get("COMPKIT_DEBUG"):
                raise
            fail(f"unexpected {type(error).__name__}: {error} (set COMPKIT_DEBUG=1 for the traceback)")

    return wrapper  # type: ignore[return-value]


MACHINE_FAULTS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "file too large (a file size limit or the filesystem's)",
    errno.EROFS: "the filesystem is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder, not a file",
}


def machine_fault(error: OSError) -> str:
    """Return one line for an OSError of the machine (full disk, read-only, permissions): the path and the fault."""
    where = error.filename if error.filename is not None else "a file"
    return f"cannot write or read {where}: {MACHINE_FAULTS[error.errno]} (no artifact was left half-written)"


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Print a warning as one yellow line, without the source location."""
    stderr.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False)


class _RichTask:
    def __init__(self, progress: Progress, task_id: TaskID) -> None:
        self._progress = progress
        self._task_id = task_id

    def advance(self, amount: float = 1) -> None:
        self._progress.advance(self._task_id, amount)

    def update(self, *, completed: float | None = None, total: float | None = None, info: str | None = None) -> None:
        fields = {} if info is None else {"info": info}
        self._progress.update(self._task_id, completed=completed, total=total, **fields)


class RichProgress:
    """compkit.progress.Progress drawn with rich on stderr; use as a context manager.

    Without a terminal (nohup, a notebook's "Save & Run All", CI) bars would be drawn nowhere: training then
    prints plain lines instead (compkit.progress.PlainProgress), unless COMPKIT_PROGRESS=1 asks for the bars.
    """

    def __init__(self, console: Console = stderr) -> None:
        no_bars = not console.is_terminal and not os.environ.get("COMPKIT_PROGRESS")
        self._plain = PlainProgress(console.file) if no_bars else None
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            disable=no_bars,
        )

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def task(self, description: str, total: float | None = None) -> ProgressTask:
        if self._plain is not None:
            return self._plain.task(description, total=total)
        return _RichTask(self._progress, self._progress.add_task(description, total=total, info=""))

    def log(self, message: str) -> None:
        self._progress.console.print(message, highlight=False)


def is_interactive() -> bool:
    return sys.stderr.isatty()
