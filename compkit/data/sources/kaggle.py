"""A competition's files from Kaggle, through the official client: listed, downloaded as one zip, extracted."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compkit.data.sources.archive import DEFAULT_MAX_UNPACKED_BYTES, extract_zip, unpacked_size
from compkit.errors import DataError
from compkit.kaggle_client import KaggleConnection, RetryPolicy, connect
from compkit.progress import Progress, ProgressTask
from compkit.workspace import fingerprint, remove_path

LIST_PAGE_SIZE = 200
# Kaggle's listing of a competition's files is known to be partial for large competitions (kaggle-cli issues
# #458, #836); it only serves as a signature of the remote data, so a bounded number of pages is enough.
MAX_LIST_PAGES = 50
POLL_SECONDS = 0.2
RESUME_MARKER_SUFFIX = ".kaggle-partial"


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    created: str


class KaggleSource:
    """Downloads all files of a Kaggle competition; `origin` is the competition's file listing."""

    name = "kaggle"

    def __init__(self, competition: str, *, retry: RetryPolicy | None = None, progress: Progress) -> None:
        self.competition = competition
        self.description = f"Kaggle competition {competition!r}"
        self._retry = retry
        self._progress = progress
        self._connection: KaggleConnection | None = None
        self._remote_files: list[RemoteFile] | None = None

    @property
    def connection(self) -> KaggleConnection:
        if self._connection is None:
            self._connection = connect(slug=self.competition, retry=self._retry, log=self._progress.log)
        return self._connection

    def remote_files(self) -> list[RemoteFile]:
        """Return the competition's files as ListDataFiles reports them, sorted by name."""
        if self._remote_files is None:
            self._remote_files = list_remote_files(self.connection, self.competition)
        return self._remote_files

    def origin(self) -> dict[str, Any]:
        files = self.remote_files()
        return {
            "competition": self.competition,
            "remote_files": {
                "n_files": len(files),
                "total_bytes": sum(f.size for f in files),
                "listing": fingerprint({"files": [[f.name, f.size, f.created] for f in files]}),
            },
        }

    def fill(self, staging: Path, scratch: Path, progress: Progress) -> None:
        expected_bytes = sum(f.size for f in self.remote_files())
        archive = download_archive(
            self.connection, self.competition, scratch, expected_bytes=expected_bytes, progress=progress
        )
        task = progress.task(f"extracting {archive.name}", total=unpacked_size(archive) or None)
        # Kaggle's listing says how big the data is, so a competition over the default limit still unpacks.
        limit = max(DEFAULT_MAX_UNPACKED_BYTES, int(expected_bytes * 1.1))
        extracted = extract_zip(archive, staging, max_unpacked_bytes=limit, on_bytes=task.advance)
        task.update(completed=extracted.n_bytes, total=extracted.n_bytes)
        archive.unlink()  # frees its disk space before the old data/ is swapped out


def list_remote_files(connection: KaggleConnection, competition: str) -> list[RemoteFile]:
    """Return the files ListDataFiles reports for `competition` (up to MAX_LIST_PAGES pages), sorted by name."""
    files: list[RemoteFile] = []
    page_token: str | None = None
    seen_tokens: set[str] = set()
    for _ in range(MAX_LIST_PAGES):
        response = connection.call(
            functools.partial(
                connection.api.competition_list_files, competition, page_token=page_token, page_size=LIST_PAGE_SIZE
            ),
            slug=competition,
        )
        for remote in response.files:
            created = remote.creation_date.isoformat() if remote.creation_date is not None else ""
            files.append(RemoteFile(name=remote.name or remote.ref, size=int(remote.total_bytes or 0), created=created))
        page_token = response.next_page_token
        if not response.files or not page_token or page_token in seen_tokens:
            break
        seen_tokens.add(page_token)
    return sorted(files, key=lambda f: f.name)


def download_archive(
    connection: KaggleConnection, competition: str, folder: Path, *, expected_bytes: int, progress: Progress
) -> Path:
    """Return the zip of all competition files, downloaded into `folder` by the official client."""
    folder.mkdir(parents=True, exist_ok=True)
    task = progress.task(f"downloading {competition}", total=expected_bytes or None)

    def download() -> None:
        for leftover in folder.iterdir():  # a retry starts from scratch
            remove_path(leftover)
        connection.api.competition_download_files(competition, path=str(folder), force=True, quiet=True)

    with _report_growth(folder, task):
        connection.call(download, slug=competition)
    archive = _downloaded_file(folder, competition)
    size = archive.stat().st_size
    task.update(completed=size, total=size)
    return archive


def _downloaded_file(folder: Path, competition: str) -> Path:
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.endswith(RESUME_MARKER_SUFFIX)]
    if len(files) != 1:
        raise DataError(f"Kaggle download of {competition!r} left {len(files)} files instead of one zip in {folder}")
    return files[0]


@contextlib.contextmanager
def _report_growth(folder: Path, task: ProgressTask) -> Iterator[None]:
    """Advance `task` to the size of what is being written in `folder` while the body runs.

    The client writes the response's Content-Length into a `.kaggle-partial` marker before the body, which
    gives the task its true total (the file listing's sizes are of the unpacked files, and may be partial).
    """
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(POLL_SECONDS):
            with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
                entries = list(os.scandir(folder))
                markers = [e for e in entries if e.name.endswith(RESUME_MARKER_SUFFIX)]
                total = json.loads(Path(markers[0].path).read_text())["size"] if markers else None
                completed = sum(e.stat().st_size for e in entries if not e.name.endswith(RESUME_MARKER_SUFFIX))
                task.update(completed=completed, total=int(total) if total else None)

    watcher = threading.Thread(target=poll, name="compkit-download-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
