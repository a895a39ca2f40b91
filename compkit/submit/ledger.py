"""The submission ledger: one CSV row per attempt to submit (failures included), in the workspace.

A row is written before anything goes over the network (status `uploading`) and updated as the attempt
goes on, so an interrupted or failed submission still leaves its row (one that a killed submit left
`uploading` is settled by `compkit submissions --refresh`). Every change rewrites the whole file atomically
while holding a lock beside it, so two compkit processes never drop each other's rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from compkit.errors import DataError
from compkit.workspace import Workspace, write_csv

COLUMNS = (
    "id", "submitted_at", "competition", "kind", "model", "file", "sha256", "message", "cv_score",
    "status", "ref", "public_score", "error",
)
# uploading: written before the upload; pending: Kaggle accepted it and is scoring; complete / error: Kaggle's
# verdict; failed: Kaggle did not take it (refused, unreachable); interrupted: stopped mid-upload, outcome
# unknown; pushed: a kernel was pushed (its score comes from Kaggle's page once submitted there); unknown: left
# uploading by a submit that died, and not in Kaggle's list of submissions when the ledger was refreshed.
STATUSES = ("uploading", "pending", "complete", "error", "failed", "interrupted", "pushed", "unknown")


def read_ledger(workspace: Workspace) -> pd.DataFrame:
    """Return every ledger row, oldest first (an empty frame with the ledger's columns when there is none)."""
    path = workspace.ledger_path
    if not path.is_file():
        return pd.DataFrame({column: pd.Series(dtype=str) for column in COLUMNS})
    try:
        ledger = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a readable ledger ({str(error).strip().splitlines()[0]})") from None
    missing = [column for column in COLUMNS if column not in ledger.columns]
    if missing:
        raise DataError(f"{path}: not a compkit ledger (missing column {missing[0]!r})")
    return ledger[list(COLUMNS)]


def add_row(workspace: Workspace, **fields: object) -> str:
    """Append a row (columns not given stay empty) stamped with the current UTC time; return its id."""
    _check_fields(fields)
    row_id = uuid.uuid4().hex[:12]
    row = {column: "" for column in COLUMNS}
    row.update({name: _cell(value) for name, value in fields.items()})
    row.update(id=row_id, submitted_at=datetime.now(UTC).isoformat(timespec="seconds"))
    with _locked(workspace.ledger_lock):
        ledger = read_ledger(workspace)
        write_csv(workspace.ledger_path, pd.concat([ledger, pd.DataFrame([row])], ignore_index=True))
    return row_id


def update_row(workspace: Workspace, row_id: str, **fields: object) -> None:
    """Set `fields` on the row `row_id`."""
    _check_fields(fields)
    with _locked(workspace.ledger_lock):
        ledger = read_ledger(workspace)
        at = ledger.index[ledger["id"] == row_id]
        if len(at) != 1:
            raise DataError(f"{workspace.ledger_path}: no row {row_id!r}")
        for name, value in fields.items():
            ledger.loc[at, name] = _cell(value)
        write_csv(workspace.ledger_path, ledger)


def _check_fields(fields: dict[str, object]) -> None:
    unknown = sorted(set(fields) - set(COLUMNS))
    if unknown:
        raise ValueError(f"unknown ledger column {unknown[0]!r}")
    if "status" in fields and fields["status"] not in STATUSES:
        raise ValueError(f"unknown ledger status {fields['status']!r}")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return " ".join(str(value).split())  # one line per row, whatever the error text held


@contextlib.contextmanager
def submitting(workspace: Workspace) -> Iterator[None]:
    """Hold the submit lock (shared) while a submit's row may be `uploading`: refresh leaves such rows alone."""
    with _locked(workspace.submit_lock, fcntl.LOCK_SH):
        yield


def abandoned_uploads(workspace: Workspace) -> pd.DataFrame | None:
    """Return the `uploading` file rows whose submit died (kill -9, a lost machine); None while a submit runs."""
    if not workspace.ledger_path.is_file():
        return read_ledger(workspace)
    with open(workspace.submit_lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # any uploading row may be that submit's own
            return None
        ledger = read_ledger(workspace)
    return ledger[(ledger["status"] == "uploading") & (ledger["kind"] == "file")]


@contextlib.contextmanager
def _locked(path: Path, operation: int = fcntl.LOCK_EX) -> Iterator[None]:
    """Hold a lock (exclusive unless `operation` says LOCK_SH) on the lock file `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, operation)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ranking_disagreements(ledger: pd.DataFrame, models: list[str] | None = None) -> list[tuple[dict, dict]]:
    """Return the pairs of models that OOF (CV) ranks one way and the public leaderboard the other.

    Each model counts once, with its latest scored submission (`models` limits the check, e.g. to an
    ensemble's members). A pair is returned as (the one CV ranks higher, the other), each a dict of model,
    cv and public; an empty list when they agree or fewer than two models have both scores.
    """
    cv = pd.to_numeric(ledger["cv_score"], errors="coerce")
    public = pd.to_numeric(ledger["public_score"], errors="coerce")
    scored = ledger.assign(cv=cv, public=public)[cv.notna() & public.notna() & (ledger["model"] != "")]
    if models is not None:
        scored = scored[scored["model"].isin(models)]
    latest = scored.groupby("model", sort=True).tail(1)[["model", "cv", "public"]].to_dict("records")
    return [(a, b) if a["cv"] > b["cv"] else (b, a)
            for i, a in enumerate(latest) for b in latest[i + 1:]
            if (a["cv"] - b["cv"]) * (a["public"] - b["public"]) < 0]
