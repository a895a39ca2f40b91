"""Options shared by several commands, defined once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Competition = Annotated[
    str,
    typer.Option("--competition", "-c", help="Competition slug (see `compkit competitions`) or path to its folder."),
]
WorkspaceBase = Annotated[
    Path | None,
    typer.Option(
        "--workspace",
        envvar="COMPKIT_WORKSPACE",
        help="Folder holding one workspace per competition (default: ./work).",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON for machines.")]
Force = Annotated[bool, typer.Option("--force", help="Redo the stage even when its artifacts are fresh.")]
Knn = Annotated[
    str | None,
    typer.Option(
        "--knn",
        help="Dense kNN backend of every search: auto, torch, faiss or cuml (default: the config's \\[neighbors] "
        "backend, else auto). Results are the same with each.",
        show_default=False,
    ),
]
