"""A tiny progress interface so the library reports long work without importing rich."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TextIO, TypeVar

T = TypeVar("T")


class ProgressTask(Protocol):
    def advance(self, amount: float = 1) -> None: ...

    def update(
        self, *, completed: float | None = None, total: float | None = None, info: str | None = None
    ) -> None: ...


class Progress(Protocol):
    """Creates tasks shown to the user; the CLI implements it with rich, the library gets NullProgress."""

    def task(self, description: str, total: float | None = None) -> ProgressTask: ...

    def log(self, message: str) -> None: ...


class _NullTask:
    def advance(self, amount: float = 1) -> None:
        pass

    def update(self, *, completed: float | None = None, total: float | None = None, info: str | None = None) -> None:
        pass


class NullProgress:
    """Progress that shows nothing (the default in the library and in tests)."""

    def task(self, description: str, total: float | None = None) -> ProgressTask:
        return _NullTask()

    def log(self, message: str) -> None:
        pass


NO_PROGRESS = NullProgress()

PLAIN_LINE_INTERVAL_S = 60.0


class PlainProgress:
    """Progress as plain lines, for a stream that is no terminal (nohup, a notebook's "Save & Run All", CI).

    A task prints one line when it reports `info` after a whole unit more is done (an epoch), and at most
    one line per `interval_s` for reports within a unit (a long epoch): its description, the info, the time
    elapsed and the time left at the task's rate so far. Tasks that never report info (downloads, embedding
    batches) print nothing. Each line is flushed, so a log file or a notebook shows it at once.
    """

    def __init__(self, stream: TextIO | None = None, *, interval_s: float = PLAIN_LINE_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._stream, self.interval_s, self.clock = stream, interval_s, clock

    def task(self, description: str, total: float | None = None) -> ProgressTask:
        return _PlainTask(self, description, total)

    def log(self, message: str) -> None:
        self.write(message)

    def write(self, line: str) -> None:
        stream = self._stream if self._stream is not None else sys.stderr
        stream.write(line + "\n")
        stream.flush()


class _PlainTask:
    def __init__(self, progress: PlainProgress, description: str, total: float | None) -> None:
        self.progress, self.description, self.total = progress, description, total
        self.completed = 0.0
        self.started_at, self.started_from = progress.clock(), 0.0
        self.reported = False
        self.last_line_at: float | None = None
        self.last_line_units = 0

    def advance(self, amount: float = 1) -> None:
        self.completed += amount

    def update(self, *, completed: float | None = None, total: float | None = None, info: str | None = None) -> None:
        now = self.progress.clock()
        if completed is not None:
            self.completed = completed
            if info is None and not self.reported:  # where the task starts: a resumed run's earlier units
                self.started_at, self.started_from, self.last_line_units = now, completed, int(completed)
        if total is not None:
            self.total = total
        if info is None:
            return
        self.reported = True
        units = int(self.completed)
        since_line = now - (self.last_line_at if self.last_line_at is not None else self.started_at)
        if units == self.last_line_units and since_line < self.progress.interval_s:
            return
        self.last_line_at, self.last_line_units = now, units
        self.progress.write(f"{self.description}  {info}  {self._times(now)}")

    def _times(self, now: float) -> str:
        elapsed = now - self.started_at
        done = self.completed - self.started_from
        if self.total is None or done <= 0:
            return f"{format_duration(elapsed)} elapsed"
        left = elapsed / done * max(0.0, self.total - self.completed)
        return f"{format_duration(elapsed)} elapsed, {format_duration(left)} left"


def format_duration(seconds: float) -> str:
    """Return seconds as h:mm:ss (or m:ss under an hour)."""
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def track(progress: Progress, items: Iterable[T], description: str, total: float | None = None) -> Iterator[T]:
    """Yield `items`, advancing a progress task by one for each."""
    task = progress.task(description, total=total)
    for item in items:
        yield item
        task.advance(1)
