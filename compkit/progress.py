"""A tiny progress interface so the library reports long work without importing rich."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar

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


def track(progress: Progress, items: Iterable[T], description: str, total: float | None = None) -> Iterator[T]:
    """Yield `items`, advancing a progress task by one for each."""
    task = progress.task(description, total=total)
    for item in items:
        yield item
        task.advance(1)
