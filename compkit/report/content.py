"""What a report says, apart from how it is drawn: sections of tables and of examples (rows shown as cards)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class Shown:
    """One training row shown in an example: its role in the example, its image and a few caption lines."""

    role: str
    row: int
    image: Path | None
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Example:
    """One error: a heading (its similarity, its kind) and the rows it is about."""

    heading: str
    shown: tuple[Shown, ...]


@dataclass(frozen=True)
class Section:
    """One part of the report: `key` names its HTML id (and the browser test's check)."""

    key: str
    title: str
    text: str = ""
    table: pd.DataFrame | None = None
    examples: tuple[Example, ...] = ()


@dataclass(frozen=True)
class Report:
    title: str
    facts: tuple[tuple[str, str], ...]
    sections: tuple[Section, ...] = field(default_factory=tuple)

    @property
    def images(self) -> dict[int, Path]:
        """Return every row shown with an image: {row: its image file}."""
        return {s.row: s.image for section in self.sections for example in section.examples
                for s in example.shown if s.image is not None}
