"""`compkit fetch`: get a competition's files into `data/` atomically, or do nothing when they are intact."""

from __future__ import annotations

import dataclasses
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compkit.config import CompetitionConfig
from compkit.data.checks import check_data
from compkit.data.sources import DataSource, human_size
from compkit.data.sources.kaggle import KaggleSource
from compkit.data.sources.local import LocalSource, link_entries
from compkit.data.tables import data_inputs
from compkit.errors import ConfigError, DataError
from compkit.kaggle_client import RetryPolicy
from compkit.locking import exclusive_lock
from compkit.progress import NO_PROGRESS, Progress
from compkit.workspace import (
    FETCH_SCRATCH_PREFIX,
    Workspace,
    is_fresh,
    manifest_path,
    naming_path,
    read_manifest,
    remove_path,
    replace_directory,
    temp_siblings,
    write_manifest,
)

SOURCES = ("kaggle", "local", "synthetic")


@dataclass(frozen=True)
class FetchResult:
    source: str
    skipped: bool  # True when the data was already intact and nothing was fetched
    n_files: int
    n_bytes: int
    data_dir: Path
    message: str


def fetch_competition(
    config: CompetitionConfig,
    workspace: Workspace,
    *,
    source: str | None = None,
    path: Path | None = None,
    in_place: bool | None = None,
    force: bool = False,
    progress: Progress = NO_PROGRESS,
    retry: RetryPolicy | None = None,
) -> FetchResult:
    """Return what was fetched into `workspace.data_dir`; on any failure data/ is left as it was.

    The files are written to a staging folder beside data/, checked against the config (expected files, then
    compkit.data.checks: columns, ids, labels, images), then swapped in with their manifest. Unless `force`,
    nothing is fetched when the manifest says the data came from the same origin (same Kaggle file listing,
    same local files, same synthetic settings) and the files on disk still match it. One fetch runs at a time
    per workspace (CompkitError naming the other's pid); it first removes what a killed fetch left behind.
    `source`, `path` and `in_place` override the config's `source`, `path` and `in_place` (see
    `with_data_source`); a local folder used in place is linked, not copied, and checked all the same.
    """
    config = with_data_source(config, source=source, path=path, in_place=in_place)
    name = config.source
    data_source = make_source(name, config, path=local_path(config), retry=retry, progress=progress)
    origin = data_source.origin()
    with exclusive_lock(workspace.stage_lock("fetch"), holder="compkit fetch"):
        _remove_abandoned_scratch(workspace)
        return _fetch_unless_intact(config, workspace, data_source, name, origin, force=force, progress=progress)


def _fetch_unless_intact(
    config: CompetitionConfig, workspace: Workspace, data_source: DataSource, name: str, origin: dict[str, Any],
    *, force: bool, progress: Progress,
) -> FetchResult:
    """Return what was fetched, unless data/ is already intact (the caller holds the fetch lock)."""
    data_dir = workspace.data_dir
    if not force and is_intact(config, workspace, source=name, origin=origin):
        manifest = read_manifest(data_dir) or {}
        n_files, n_bytes = manifest.get("n_files", 0), manifest.get("n_bytes", 0)
        message = (
            f"{config.slug}: data already up to date ({n_files:,} files, {human_size(n_bytes)} from "
            f"{data_source.description}); nothing fetched (use --force to fetch again)"
        )
        return FetchResult(name, skipped=True, n_files=n_files, n_bytes=n_bytes, data_dir=data_dir, message=message)

    scratch = workspace.fetch_scratch(uuid.uuid4().hex[:12])
    staging = Workspace(scratch).data_dir
    try:
        with naming_path(scratch):
            staging.mkdir(parents=True)
            data_source.fill(staging, scratch / "download", progress)
            _hoist_single_folder(staging, config)
            check_expected_files(config, staging, data_source.description)
            check_data(config, staging, where=data_source.description, progress=progress)
            inputs = data_inputs(config, Workspace(scratch))
            n_files, n_bytes = _count_files(staging)
            replace_directory(staging, data_dir)
            write_manifest(data_dir, inputs, source=name, origin=origin, n_files=n_files, n_bytes=n_bytes)
    finally:
        remove_path(scratch)
    message = f"{config.slug}: fetched {n_files:,} files ({human_size(n_bytes)}) from {data_source.description}"
    return FetchResult(name, skipped=False, n_files=n_files, n_bytes=n_bytes, data_dir=data_dir, message=message)


def make_source(
    name: str, config: CompetitionConfig, *, path: Path | None, retry: RetryPolicy | None, progress: Progress
) -> DataSource:
    """Return the data source called `name` for this competition."""
    if name == "kaggle":
        return KaggleSource(config.kaggle or config.slug, retry=retry, progress=progress)
    if name == "local":
        return LocalSource(path, in_place=config.in_place)
    if name == "synthetic":
        if config.synthetic is None:
            raise ConfigError(f"{config.slug}: --source synthetic needs a [synthetic] table in competition.toml")
        return SyntheticSource(config)
    raise ConfigError(f"unknown source {name!r} (choose from: {', '.join(SOURCES)})")


def with_data_source(
    config: CompetitionConfig, *, source: str | None = None, path: Path | str | None = None,
    in_place: bool | None = None,
) -> CompetitionConfig:
    """Return `config` fetching from `source`, `path` and `in_place` where given (`--source/--path/--in-place`).

    `path` and `in_place` are for a local source only: ConfigError otherwise.
    """
    name = source or config.source
    if name not in SOURCES:
        raise ConfigError(f"unknown source {name!r} (choose from: {', '.join(SOURCES)})")
    if path is not None and name != "local":
        raise ConfigError(f"--path is for --source local; {config.slug} would fetch from {name}")
    if in_place is not None and name != "local":
        raise ConfigError(f"--in-place and --copy are for --source local; {config.slug} would fetch from {name}")
    changes = {"source": name, "path": None if path is None else str(Path(path).expanduser()), "in_place": in_place}
    return dataclasses.replace(config, **{key: value for key, value in changes.items() if value is not None})


def with_recorded_source(config: CompetitionConfig, workspace: Workspace) -> CompetitionConfig:
    """Return `config` fetching from the local folder data/ came from, while it is there (else `config` as is).

    So `compkit run` fetches data that `fetch --source local` brought, and that is now missing files or
    changed, from that folder again (copied or in place, as before), offline, not from the config's source.
    A config that names its own local `path` keeps it.
    """
    if local_path(config) is not None:
        return config
    manifest = read_manifest(workspace.data_dir) or {}
    origin = manifest.get("origin") or {}
    folder = origin.get("path")
    if manifest.get("source") != "local" or not isinstance(folder, str) or not Path(folder).exists():
        return config
    return dataclasses.replace(config, source="local", path=folder, in_place=origin.get("in_place") is True)


def local_path(config: CompetitionConfig) -> Path | None:
    """Return the folder or zip a local source reads (the config's `path`), or None when it names none."""
    return Path(config.path) if config.source == "local" and config.path else None


def origin_change(config: CompetitionConfig, workspace: Workspace) -> str | None:
    """Return why data/ no longer matches the config's own settings, judged offline (None: it still does).

    Only a generated or local source can be judged without asking anyone: its origin is the generator and
    its settings, or the local folder's path and listing (when the config names its path). Whether Kaggle's
    files changed is asked by an explicit `compkit fetch`, never by a judgement.
    """
    manifest = read_manifest(workspace.data_dir) or {}
    if local_path(config) is not None:
        return _local_origin_change(config, manifest)
    if config.synthetic is None or manifest.get("source") != "synthetic":
        return None
    if manifest.get("origin") != SyntheticSource(config).origin():
        return "the synthetic generator or its settings changed"
    return None


def _local_origin_change(config: CompetitionConfig, manifest: dict[str, Any]) -> str | None:
    try:
        source = LocalSource(local_path(config), in_place=config.in_place)
    except DataError:  # gone or unreadable: a copy is intact without it; in place, data_inputs sees the loss
        return None
    origin = source.origin()
    if manifest.get("source") != "local" or (manifest.get("origin") or {}).get("path") != origin["path"]:
        return f"data/ came from {manifest.get('source') or 'elsewhere'}, not from {source.path}"
    if manifest.get("origin") != origin:
        return f"{source.description} changed since it was fetched (or --in-place/--copy changed)"
    return None


def is_intact(config: CompetitionConfig, workspace: Workspace, *, source: str, origin: dict[str, Any]) -> bool:
    """Return True when data/ came from `source` with this `origin` and its files still match its manifest."""
    manifest = read_manifest(workspace.data_dir)
    if manifest is None or manifest.get("source") != source or manifest.get("origin") != origin:
        return False
    return is_fresh(workspace.data_dir, data_inputs(config, workspace))


def expected_files(config: CompetitionConfig) -> list[tuple[str, bool]]:
    """Return (relative path, is_folder) of what the config says the data folder holds."""
    tables = [config.data.train, config.data.sample_submission, config.data.test, config.data.solution]
    expected = [(name, False) for name in tables if name]
    if config.columns.image:
        expected += [(config.data.train_images, True), (config.data.test_images, True)]
    return expected


def check_expected_files(config: CompetitionConfig, folder: Path, description: str) -> None:
    """Raise DataError naming the first file the config expects that `folder` lacks."""
    for name, is_folder in expected_files(config):
        target = folder / name
        if target.is_dir() if is_folder else target.is_file():
            continue
        found = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in folder.iterdir())
        listing = ", ".join(found[:8]) + (", ..." if len(found) > 8 else "") if found else "nothing"
        kind = "folder" if is_folder else "file"
        raise DataError(f"{description} has no {kind} {name!r}, which {config.slug} expects (found: {listing})")


class SyntheticSource:
    """Generates a demo competition on this machine; `origin` is the generator and its settings."""

    name = "synthetic"

    def __init__(self, config: CompetitionConfig) -> None:
        assert config.synthetic is not None
        self.task = config.task
        self.settings = config.synthetic
        self.description = f"the synthetic {config.task} generator (seed {config.synthetic.seed})"

    def origin(self) -> dict[str, Any]:
        from compkit.data.sources.synthetic import GENERATOR_VERSIONS

        return {"generator": self.task, "version": GENERATOR_VERSIONS[self.task], **dataclasses.asdict(self.settings)}

    def fill(self, staging: Path, scratch: Path, progress: Progress) -> None:
        if self.task == "match":
            from compkit.data.sources.synthetic.match import generate_match as generate
        else:
            from compkit.data.sources.synthetic.identify import generate_identify as generate
        settings = self.settings
        progress.log(
            f"generating synthetic {self.task} data: {settings.n_train_groups} train and {settings.n_test_groups} "
            f"test groups, {settings.image_size}px images, seed {settings.seed}"
        )
        generate(
            staging,
            seed=settings.seed,
            n_train_groups=settings.n_train_groups,
            n_test_groups=settings.n_test_groups,
            image_size=settings.image_size,
        )


def _hoist_single_folder(staging: Path, config: CompetitionConfig) -> None:
    """Move the contents of a lone top-level folder up when the expected files are inside it (zipped folders)."""
    entries = list(staging.iterdir())
    train = config.data.train
    if len(entries) != 1 or not entries[0].is_dir() or (staging / train).exists():
        return
    if not (entries[0] / train).is_file():
        return
    if entries[0].is_symlink():  # a local folder used in place: link the lone folder's entries instead
        folder = entries[0].resolve()
        entries[0].unlink()
        link_entries(folder, staging)
        return
    lifted = staging.with_name(staging.name + ".lifted")
    os.replace(entries[0], lifted)
    staging.rmdir()
    os.replace(lifted, staging)


def _count_files(folder: Path) -> tuple[int, int]:
    n_files = n_bytes = 0
    for directory, _, names in os.walk(folder, followlinks=True):  # in place: the linked files
        for name in names:
            n_files += 1
            n_bytes += os.path.getsize(os.path.join(directory, name))
    return n_files, n_bytes


def _remove_abandoned_scratch(workspace: Workspace) -> None:
    """Remove what a killed fetch left: its scratch folders and the old data/ (or manifest) it was replacing.

    Called under the fetch lock, so no running fetch owns them.
    """
    data_dir = workspace.data_dir
    leftovers = [*workspace.root.glob(f"{FETCH_SCRATCH_PREFIX}*"), *temp_siblings(data_dir),
                 *temp_siblings(manifest_path(data_dir))]
    for leftover in leftovers:
        remove_path(leftover)
