"""Options shared by several commands, defined once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from compkit.config import CompetitionConfig, load_config, project_competition, with_knn_backend
from compkit.errors import ConfigError

Competition = Annotated[
    str | None,
    typer.Option(
        "--competition",
        "-c",
        envvar="COMPKIT_COMPETITION",
        help="Competition slug (see `compkit competitions`) or path to its folder (default: $COMPKIT_COMPETITION, "
        "or `competition = ...` in a compkit.toml of this folder or one above it).",
        show_default=False,
    ),
]
Overrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Set a config key for this command only: dotted keys, TOML values (models.NAME.train.epochs=3, "
        "folds.n_splits=3); repeat for several. Checked like the file, and part of every fingerprint.",
        show_default=False,
    ),
]
Models = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        metavar="NAME[,NAME...]",
        help="Only these models (repeat, or separate with commas; a combination brings its members). "
        "Default: every enabled model.",
        show_default=False,
    ),
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
Scheduler = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        envvar="COMPKIT_SCHEDULER",
        metavar="ADDRESS",
        help="Run the work as tasks on the Dask cluster at this scheduler address (tcp://host:8786); its "
        "workers must see the workspace (README: Running on several machines).",
        show_default=False,
    ),
]
Storage = Annotated[
    str | None,
    typer.Option(
        "--storage",
        envvar="COMPKIT_STORAGE",
        metavar="URL",
        help="SQLAlchemy URL of the Optuna studies (postgresql://user@host/db), shared by tuners on several "
        "machines (default: the workspace's SQLite file).",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON for machines.")]
Force = Annotated[bool, typer.Option("--force", help="Redo the stage even when its artifacts are fresh.")]
Knn = Annotated[
    str | None,
    typer.Option(
        "--knn",
        metavar="<auto|torch|faiss|cuml>",
        help="Dense kNN backend of every search (default: the config's \\[neighbors] backend, else auto: cuML on a "
        "GPU with RAPIDS, else torch). Results are the same with each.",
        show_default=False,
    ),
]

DataSourceName = Annotated[
    str | None,
    typer.Option("--source", metavar="<kaggle|local|synthetic>", help="Where the data comes from (default: the "
                 "config's source).", show_default=False),
]
LocalPath = Annotated[
    Path | None,
    typer.Option("--path", help="Folder or zip for --source local (default: the config's path).", show_default=False),
]
InPlace = Annotated[
    bool | None,
    typer.Option("--in-place/--copy", help="--source local: refer to the folder's files where they are, or copy "
                 "them into the workspace (default: in place when the folder is read-only, as /kaggle/input).",
                 show_default=False),
]


def open_config(
    competition: str | None,
    overrides: list[str] | None = None,
    models: list[str] | None = None,
    *,
    knn: str | None = None,
) -> CompetitionConfig:
    """Return the config a command runs on: the named (or default) competition, overridden, models selected."""
    name = competition or project_competition()
    if name is None:
        raise ConfigError("no competition given: pass -c SLUG, set COMPKIT_COMPETITION, or write "
                          "competition = \"SLUG\" in a compkit.toml in this folder")
    return with_knn_backend(load_config(name, overrides=overrides or (), models=models), knn)
