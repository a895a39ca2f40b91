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
    """Copies a folder, or refers to its files in place, or safely extracts a zip.

    `origin` is the source's path and file listing (name, size, mtime), and whether it is used in place.
    In place (`in_place`, by default for a folder compkit cannot write, as /kaggle/input), data/ holds one
    symbolic link per entry of the folder: nothing is copied, and nothing is ever written through them.
    """

    name = "local"

    def __init__(self, path: Path | None, *, in_place: bool | None = None) -> None:
        if path is None:
            raise DataError("--source local needs --path (or path = \"...\" in competition.toml): a folder "
                            "(e.g. /kaggle/input/<slug>) or a .zip")
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise DataError(f"{self.path}: not found")
        if not os.access(self.path, os.R_OK) or (self.path.is_dir() and not os.access(self.path, os.X_OK)):
            raise DataError(f"{self.path}: permission denied")
        self.is_folder = self.path.is_dir()
        if not self.is_folder and not zipfile.is_zipfile(self.path):
            raise DataError(f"{self.path}: neither a folder nor a zip archive")
        if in_place and not self.is_folder:
            raise DataError(f"{self.path}: a zip is extracted, it cannot be used in place (pass its folder, or --copy)")
        self.in_place = self.is_folder and (is_read_only(self.path) if in_place is None else in_place)
        self.description = f"{self.path} (in place)" if self.in_place else str(self.path)

    def origin(self) -> dict[str, Any]:
        if self.is_folder:
            listing = sorted([name, size, mtime_ns] for name, size, mtime_ns in _walk_files(self.path))
        else:
            status = self.path.stat()
            listing = [[self.path.name, status.st_size, status.st_mtime_ns]]
        origin = {
            "path": str(self.path.resolve()),
            "kind": "folder" if self.is_folder else "zip",
            "listing": fingerprint({"files": listing}),
        }
        return {**origin, "in_place": True} if self.in_place else origin  # a copy's origin as before

    def fill(self, staging: Path, scratch: Path, progress: Progress) -> None:
        if not self.is_folder:
            task = progress.task(f"extracting {self.path.name}", total=unpacked_size(self.path) or None)
            extracted = extract_zip(self.path, staging, on_bytes=task.advance)
            task.update(completed=extracted.n_bytes, total=extracted.n_bytes)
            return
        if staging.resolve().is_relative_to(self.path.resolve()):
            raise DataError(f"{self.path}: holds the workspace itself; pass the folder of the competition's files")
        if self.in_place:
            progress.log(f"using {self.path} in place: data/ links to its files, nothing is copied")
            link_entries(self.path, staging)
            return
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


def is_read_only(folder: Path) -> bool:
    """Return True when this process cannot write in `folder` (a read-only mount such as /kaggle/input, or
    permissions): such a folder is used in place by default, since a copy would double the disk it needs."""
    try:
        read_only_mount = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only_mount = False
    return read_only_mount or not os.access(folder, os.W_OK)


def link_entries(folder: Path, target: Path) -> None:
    """Fill the folder `target` with one symbolic link per entry of `folder`, each to its absolute path."""
    source = folder.resolve()
    for entry in sorted(os.listdir(source)):
        os.symlink(source / entry, target / entry)


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
