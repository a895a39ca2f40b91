"""Getting a competition's data into the workspace: from Kaggle, a local folder or zip, or generated."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from compkit.progress import Progress


def human_size(n_bytes: float) -> str:
    """Return a byte count as a short human-readable size ("1.5 GiB")."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024:
            return f"{n_bytes:,.0f} {unit}" if unit == "B" else f"{n_bytes:,.1f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:,.1f} TiB"


class DataSource(Protocol):
    """Where a competition's files come from; `fetch_competition` does the staging, checks and swap."""

    name: str  # "kaggle", "local" or "synthetic"
    description: str  # names the origin in messages: "Kaggle competition 'x'", "/kaggle/input/x"

    def origin(self) -> dict[str, Any]:
        """Return JSON-ready facts identifying what `fill` would produce; equal facts mean nothing to fetch."""
        ...

    def fill(self, staging: Path, scratch: Path, progress: Progress) -> None:
        """Write the competition's files into the empty folder `staging`; `scratch` is for temporary files."""
        ...
