"""Checking a competition's tables and images against its config, before any stage reads them."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from compkit.config import CompetitionConfig
from compkit.data.tables import read_table, required_columns
from compkit.errors import DataError
from compkit.progress import NO_PROGRESS, Progress

NA_LABELS = frozenset({"nan", "na", "n/a", "#n/a", "null", "none", "<na>"})  # what pandas would read as NaN
POOL_FROM = 2_000  # fewer images are decoded in this process: starting workers would cost more than it saves
CHUNK = 256


@dataclass(frozen=True)
class DataCheck:
    n_rows: int
    n_images: int  # distinct image files decoded
    seconds: float

    @property
    def message(self) -> str:
        return f"ok: {self.n_rows:,} rows, {self.n_images:,} images checked in {self.seconds:.1f} s"


@dataclass(frozen=True)
class _Table:
    name: str
    id_column: str
    required: list[str]
    with_label: bool
    images: str | None  # folder of the images the table names, None when no model reads images
    image_column: str | None


def check_data(
    config: CompetitionConfig,
    data_dir: Path,
    *,
    where: str | None = None,
    progress: Progress = NO_PROGRESS,
    n_jobs: int = -1,
) -> DataCheck:
    """Return what was checked of the tables and images in `data_dir`; raise DataError listing every problem.

    Each problem is one line naming the file (relative to `data_dir`), the first offending row and its id,
    the column, and how many rows share the problem. The message opens with one line naming `where`
    (default: `data_dir`) and the number of problems. Checked: the columns the config's models read are
    present; ids are non-empty, free of whitespace and unique; train labels are neither empty nor NaN;
    titles are non-empty where a text or TF-IDF model reads them; pHashes are 16 hex characters; every
    image an image model reads is in its folder and decodes (JPEGs at 1/8 scale, over `n_jobs` processes).
    """
    start = time.perf_counter()
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no data folder (run: compkit fetch -c {config.slug})")
    problems: list[str] = []
    images: dict[str, list[tuple[_Table, pd.DataFrame]]] = {}  # image folder -> the tables naming its files
    n_rows = 0
    for table in _tables(config):
        frame, table_problems = _check_table(config, data_dir, table)
        problems += table_problems
        if frame is not None:
            n_rows += len(frame)
            if table.images and table.image_column in frame.columns:
                images.setdefault(table.images, []).append((table, frame))
    n_images = 0
    for folder, tables in images.items():
        folder_problems, n_decoded = _check_images(data_dir, folder, tables, progress=progress, n_jobs=n_jobs)
        problems += folder_problems
        n_images += n_decoded
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise DataError("\n  ".join([f"{where or data_dir}: {count} with {config.slug}'s data:", *problems]))
    return DataCheck(n_rows=n_rows, n_images=n_images, seconds=time.perf_counter() - start)


def _tables(config: CompetitionConfig) -> list[_Table]:
    """Return the train table and the table listing the test rows (test.csv, else sample_submission.csv)."""
    columns, data = config.columns, config.data
    image_column = columns.image if any(model.kind == "image" for model in config.models) else None
    train = _Table(data.train, columns.id, required_columns(config, with_label=True), True,
                   data.train_images if image_column else None, image_column)
    if data.test:
        test = _Table(data.test, columns.id, required_columns(config, with_label=False), False,
                      data.test_images if image_column else None, image_column)
    else:  # identify without test.csv: the sample's ids are the test images' names (as load_test reads them)
        id_column = config.submission.id_column
        test = _Table(data.sample_submission, id_column, [id_column], False,
                      data.test_images if image_column else None, id_column if image_column else None)
    return [train, test]


def _check_table(config: CompetitionConfig, data_dir: Path, table: _Table) -> tuple[pd.DataFrame | None, list[str]]:
    """Return the table read as strings (None when unreadable) and the problems of its rows."""
    path = data_dir / table.name
    try:
        frame = read_table(path, required=[])
    except DataError as error:
        return None, [str(error).replace(str(path), table.name, 1)]
    problems = [f"{table.name}: missing column {column!r} (columns: {', '.join(map(str, frame.columns))})"
                for column in table.required if column not in frame.columns]
    found = _id_problems(frame[table.id_column]) if table.id_column in frame.columns else []
    if table.with_label and config.columns.label in frame.columns:
        labels = frame[config.columns.label].str.strip()
        found.append((config.columns.label, (labels.eq("") | labels.str.lower().isin(NA_LABELS)).to_numpy(),
                      "empty or NaN label (such rows would form one group)"))
    text_readers = [model.name for model in config.models if model.kind in ("text", "tfidf")]
    if text_readers and config.columns.text in frame.columns:
        found.append((config.columns.text, frame[config.columns.text].str.strip().eq("").to_numpy(),
                      f"empty text, which {', '.join(text_readers)} read{'s' if len(text_readers) == 1 else ''}"))
    if any(model.kind == "phash" for model in config.models) and config.columns.phash in frame.columns:
        from compkit.models.phash import HASH_BITS

        well_formed = frame[config.columns.phash].str.fullmatch(f"[0-9a-fA-F]{{{HASH_BITS // 4}}}").to_numpy()
        found.append((config.columns.phash, ~well_formed, f"not a pHash of {HASH_BITS // 4} hex characters"))
    if table.image_column in frame.columns and table.image_column != table.id_column:
        found.append((table.image_column, frame[table.image_column].str.strip().eq("").to_numpy(), "empty image name"))
    for column, rows, problem in found:
        problems += _row_problem(table, frame, column, rows, problem)
    return frame, problems


def _id_problems(ids: pd.Series) -> list[tuple[str, np.ndarray, str]]:
    """Return (column, flagged rows, problem) for empty, whitespace-holding and repeated ids."""
    empty = ids.str.strip().eq("").to_numpy()
    repeated = ids.duplicated().to_numpy() & ~empty
    first = int(ids.eq(ids.iat[int(repeated.argmax())]).to_numpy().argmax()) if repeated.any() else 0
    return [(ids.name, empty, "empty id"),
            (ids.name, ids.str.contains(r"\s").to_numpy() & ~empty, "id contains whitespace"),
            (ids.name, repeated, f"duplicate id, first at row {first + 1}")]


def _row_problem(table: _Table, frame: pd.DataFrame, column: str, rows: np.ndarray, problem: str) -> list[str]:
    """Return the one line describing the rows flagged in `rows` (none when no row is flagged)."""
    count = int(rows.sum())
    if not count:
        return []
    row = int(rows.argmax())
    where = f"row {row + 1}"
    if table.id_column in frame.columns:
        where += f" (id {frame[table.id_column].iat[row]!r})"
    value = "" if column == table.id_column else f" = {frame[column].iat[row]!r}"
    return [f"{table.name}: {where}, column {column!r}{value}: {problem} ({count:,} of {len(frame):,} rows)"]


def _check_images(
    data_dir: Path, folder: str, tables: list[tuple[_Table, pd.DataFrame]], *, progress: Progress, n_jobs: int
) -> tuple[list[str], int]:
    """Return the problems of the images the tables name in `folder` (missing, undecodable) and how many decoded."""
    root = data_dir / folder
    if not root.is_dir():
        return [f"{folder}: image folder not found"], 0
    listing = pd.Index(_listing(root))
    names = pd.Index(pd.concat([frame[table.image_column] for table, frame in tables]).unique())
    present = names[names.isin(listing)].tolist()
    failures = dict(_undecodable_images(root, present, folder=folder, progress=progress, n_jobs=n_jobs))
    problems = []
    for table, frame in tables:
        column = frame[table.image_column]
        named = column.str.strip().ne("").to_numpy()
        problems += _row_problem(table, frame, table.image_column, named & ~column.isin(listing).to_numpy(),
                                 f"not found in {folder}/")
        broken = column.isin(list(failures)).to_numpy()
        if broken.any():
            reason = failures[column.iat[int(broken.argmax())]]
            problems += _row_problem(table, frame, table.image_column, broken, f"cannot be decoded ({reason})")
    return problems, len(present)


def _listing(root: Path) -> list[str]:
    """Return the relative paths (with /) of every file under `root`."""
    paths = []
    for directory, _, files in os.walk(root):
        prefix = os.path.relpath(directory, root).replace(os.sep, "/")
        paths += files if prefix == "." else [f"{prefix}/{name}" for name in files]
    return paths


def _undecodable_images(
    root: Path, names: list[str], *, folder: str, progress: Progress, n_jobs: int
) -> list[tuple[str, str]]:
    """Return (name, reason) of each image under `root` that does not decode, over a process pool when many."""
    task = progress.task(f"checking {folder}", total=len(names))
    chunks = [names[i:i + CHUNK] for i in range(0, len(names), CHUNK)]
    if len(names) < POOL_FROM or n_jobs == 1:
        results = (_decode_chunk(str(root), chunk) for chunk in chunks)
    else:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
            delayed(_decode_chunk)(str(root), chunk) for chunk in chunks
        )
    failures = []
    for n_checked, chunk_failures in results:
        failures += chunk_failures
        task.advance(n_checked)
    return failures


def _decode_chunk(root: str, names: list[str]) -> tuple[int, list[tuple[str, str]]]:
    """Return how many images were decoded and (name, reason) of those that failed.

    A JPEG is decoded in draft mode at the smallest DCT scale (1/8 per side): every byte of its scan is still
    entropy-decoded, so a truncated file is caught, at a fraction of a full decode's cost.
    """
    from PIL import Image, UnidentifiedImageError

    failures = []
    for name in names:
        try:
            with Image.open(os.path.join(root, name)) as image:
                image.draft("RGB", (1, 1))
                image.load()
        except UnidentifiedImageError:
            failures.append((name, "not an image file PIL can read"))
        except (OSError, SyntaxError, ValueError) as error:  # what PIL raises for damaged files
            failures.append((name, str(error) or type(error).__name__))
    return len(names), failures
