"""Loading a competition's tables from the workspace: columns checked, config fixes applied."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from compkit.config import CompetitionConfig
from compkit.errors import DataError
from compkit.workspace import Workspace, file_sha256, fingerprint


def read_table(path: Path, *, required: list[str], source_hint: str = "") -> pd.DataFrame:
    """Return a CSV read as strings (no NA parsing), raising DataError naming a missing column."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found{source_hint}")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a readable CSV ({str(error).splitlines()[0]})") from None
    for column in required:
        if column not in frame.columns:
            raise DataError(f"{path}: missing column {column!r} (columns: {', '.join(map(str, frame.columns))})")
    return frame


def required_columns(config: CompetitionConfig, *, with_label: bool) -> list[str]:
    """Return the columns a train (with_label) or test table must have for this config."""
    columns = config.columns
    wanted = [columns.id]
    if with_label:
        wanted.append(columns.label)
        if columns.species:
            wanted.append(columns.species)
    by_kind = {"image": columns.image, "text": columns.text, "tfidf": columns.text, "phash": columns.phash}
    for model in config.models:
        column = by_kind.get(model.kind)  # union/concat/score models read their members' embeddings only
        if column and column not in wanted:
            wanted.append(column)
    return wanted


def apply_fixes(frame: pd.DataFrame, fixes: dict[str, dict[str, str]], *, path: Path) -> pd.DataFrame:
    """Return `frame` with the config's value replacements applied per column."""
    fixed = frame.copy()
    for column, replacements in fixes.items():
        if column not in fixed.columns:
            raise DataError(f"{path}: fixes name column {column!r}, which the file does not have")
        fixed[column] = fixed[column].replace(replacements)
    return fixed


def _check_unique_ids(frame: pd.DataFrame, id_column: str, path: Path) -> None:
    duplicated = frame[id_column].duplicated()
    if duplicated.any():
        row = int(duplicated.to_numpy().argmax())
        raise DataError(f"{path}: row {row + 1}: duplicate id {frame[id_column].iloc[row]!r}")


def load_train(config: CompetitionConfig, workspace: Workspace) -> pd.DataFrame:
    """Return the training table with fixes applied and one row per unique id."""
    path = workspace.data_dir / config.data.train
    frame = read_table(path, required=required_columns(config, with_label=True), source_hint=_fetch_hint(config))
    frame = apply_fixes(frame, config.fixes, path=path)
    _check_unique_ids(frame, config.columns.id, path)
    return frame


def load_test(config: CompetitionConfig, workspace: Workspace) -> pd.DataFrame:
    """Return the test table: test.csv, or the ids listed by sample_submission.csv when there is none."""
    if config.data.test:
        path = workspace.data_dir / config.data.test
        frame = read_table(path, required=required_columns(config, with_label=False), source_hint=_fetch_hint(config))
    else:
        path = workspace.data_dir / config.data.sample_submission
        id_column = config.submission.id_column
        sample = read_table(path, required=[id_column], source_hint=_fetch_hint(config))
        frame = sample[[id_column]].rename(columns={id_column: config.columns.id})
        if config.columns.image and config.columns.image != config.columns.id:
            frame[config.columns.image] = frame[config.columns.id]
    frame = apply_fixes(frame, {k: v for k, v in config.fixes.items() if k in frame.columns}, path=path)
    _check_unique_ids(frame, config.columns.id, path)
    return frame


def solution_path(config: CompetitionConfig, workspace: Workspace) -> Path:
    """Return where the test truth lives (demo competitions ship one), or raise if the config has none."""
    if not config.data.solution:
        raise DataError(f"{config.slug} has no solution file: pass --solution FILE")
    return workspace.data_dir / config.data.solution


def _fetch_hint(config: CompetitionConfig) -> str:
    return f" (run: compkit fetch -c {config.slug})"


def data_inputs(config: CompetitionConfig, workspace: Workspace) -> dict:
    """Return what the data stage's fingerprint is made of: table hashes and image-folder listings.

    Tables are hashed in full; image folders by their sorted (name, size) listing, which catches added,
    removed and truncated files without reading every image on each status check.
    """

    data_dir = workspace.data_dir
    tables = {}
    for name in (config.data.train, config.data.test, config.data.sample_submission, config.data.solution):
        if name:
            path = data_dir / name
            tables[name] = file_sha256(path) if path.is_file() else None
    folders = {}
    for name in (config.data.train_images, config.data.test_images):
        folder = data_dir / name
        if folder.is_dir():
            listing = sorted((entry.name, entry.stat().st_size) for entry in _scan_files(folder))
            folders[name] = {"files": len(listing), "listing": fingerprint({"listing": listing})}
        else:
            folders[name] = None
    return {"tables": tables, "image_folders": folders, "fixes": config.fixes}


def _scan_files(folder: Path):
    import os

    stack = [folder]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file():  # a linked file (data/ used in place) is listed by its target
                    yield entry
