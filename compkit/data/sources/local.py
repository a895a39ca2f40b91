"""A competition's files from a local folder (e.g. /kaggle/input/<slug>) or a zip archive."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

from compkit.data.sources.archive import extract_zip, unpacked_size
from compkit.errors import DataError
from compkit.progress import Progress
from compkit.workspace import fingerprint


class LocalSource:
    """Copies a folder or safely extracts a zip; `origin` is the source's path and file listing."""

    name = "local"

    def __init__(self, path: Path | None) -> None:
        if path is None:
            raise DataError("--source local needs --path: a folder (e.g. /kaggle/input/<slug>) or a .zip")
        self.path = Path(path).expanduser()
        self.description = str(self.path)
        if not self.path.exists():
            raise DataError(f"{self.path}: not found")
        if not os.access(self.path, os.R_OK) or (self.path.is_dir() and not os.access(self.path, os.X_OK)):
            raise DataError(f"{self.path}: permission denied")
        self.is_folder = self.path.is_dir()
        if not self.is_folder and not zipfile.is_zipfile(self.path):
            raise DataError(f"{self.path}: neither a folder nor a zip archive")

    def origin(self) -> dict[str, Any]:
        if self.is_folder:
            listing = sorted([name, size, mtime_ns] for name, size, mtime_ns in _walk_files(self.path))
        else:
            status = self.path.stat()
            listing = [[self.path.name, status.st_size, status.st_mtime_ns]]
        return {
            "path": str(self.path.resolve()),
            "kind": "folder" if self.is_folder else "zip",
            "listing": fingerprint({"files": listing}),
        }

    def fill(self, staging: Path, scratch: Path, progress: Progress) -> None:
        if not self.is_folder:
            task = progress.task(f"extracting {self.path.name}", total=unpacked_size(self.path) or None)
            extracted = extract_zip(self.path, staging, on_bytes=task.advance)
            task.update(completed=extracted.n_bytes, total=extracted.n_bytes)
            return
        if staging.resolve().is_relative_to(self.path.resolve()):
            raise DataError(f"{self.path}: holds the workspace itself; pass the folder of the competition's files")
        total = sum(size for _, size, _ in _walk_files(self.path))
        task = progress.task(f"copying {self.path.name}", total=total)

        def copy_file(source: str, target: str) -> str:
            copied = shutil.copy2(source, target)
            task.advance(os.path.getsize(target))
            return copied

        try:
            shutil.copytree(self.path, staging, copy_function=copy_file, dirs_exist_ok=True)
        except shutil.Error as error:
            source, _, reason = error.args[0][0]
            raise DataError(f"{self.path}: cannot copy {source} ({reason})") from None
        except OSError as error:
            raise DataError(f"{self.path}: cannot copy {error.filename or ''} ({error.strerror or error})") from None


def _walk_files(folder: Path):
    """Yield (relative path, size, mtime_ns) of every file under `folder`, following links like the copy does."""
    for directory, _, names in os.walk(folder, followlinks=True):
        for name in sorted(names):
            path = os.path.join(directory, name)
            try:
                status = os.stat(path)
            except OSError as error:
                raise DataError(f"{path}: cannot read ({error.strerror})") from None
            yield os.path.relpath(path, folder), status.st_size, status.st_mtime_ns
