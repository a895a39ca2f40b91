"""Figures written as PNG artifacts: matplotlib with its Agg backend (no display), imported late."""

from __future__ import annotations

from pathlib import Path

from compkit.workspace import atomic_path


def pyplot():
    """Return matplotlib.pyplot drawing off-screen (a notebook's or a server's missing display is no matter)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(figure, path: Path) -> None:
    """Write `figure` to `path` atomically as a PNG, and free it."""
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    pyplot().close(figure)
