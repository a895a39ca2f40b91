"""The results history, `tuning/history.jsonl`: every tuning and ensemble result, appended, never rewritten.

`tuning/<model>.json` and `tuning/ensemble.json` hold the result in effect; each new result replaces it (or,
for an ensemble, is kept only when it scores better). The history keeps them all, one JSON line each: when,
what (a model's tuning or the ensemble), what changed since that subject's previous entry (its inputs'
fingerprint, the settings: trials in all, select method, study, models), its OOF score and the score in effect
afterwards. A result worse than the one in effect before it warns, so a greedy ensemble can no longer
replace a better Optuna one without a word.

The history is written before the artifact it records: a kill between the two leaves an entry whose artifact
the next run makes again (and records again), never an artifact without its entry.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from compkit.locking import exclusive_lock
from compkit.workspace import Workspace, atomic_path, fingerprint

METRICS = {"match": "mean_row_f1", "identify": "map_at_5"}
KINDS = ("tune", "ensemble")
# Scores closer than this are equal: the same parameters scored twice may differ in the last float bits.
SCORE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class HistoryEntry:
    """One tuning or ensemble result.

    `score` is this result's OOF score; `current` the OOF score in effect after it (this one's, or the
    previous one's when the previous result was kept); `verdict` compares `score` with the score in effect
    before: first, better, same or worse. `settings` are what "what changed" compares; `result` holds the
    parameters or weights found.
    """

    time: str
    kind: str
    subject: str
    score: float
    current: float
    metric: str
    fingerprint: str
    changed: str
    verdict: str
    kept: str = "new"
    settings: dict = field(default_factory=dict)
    result: dict = field(default_factory=dict)

    @property
    def when(self) -> str:
        """Return the entry's time as `YYYY-MM-DD HH:MM` (UTC)."""
        return self.time.replace("T", " ")[:16]


def record_result(
    workspace: Workspace,
    kind: str,
    subject: str,
    score: float,
    *,
    task: str,
    inputs: Mapping[str, Any],
    settings: Mapping[str, Any],
    result: Mapping[str, Any] | None = None,
    kept_score: float | None = None,
) -> HistoryEntry:
    """Append one result to the history and return its entry; warn when it is worse than the one in effect.

    `inputs` are what the result was made from (fingerprinted); `kept_score`, when given, is the score of the
    previous result that stays in effect instead of this one (an ensemble tuning that did not beat it).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    score, digest = float(score), fingerprint(inputs)
    settings, result = _plain(settings), _plain(result or {})
    with exclusive_lock(workspace.history_lock, holder="history writer", wait=True):
        previous = next((e for e in reversed(read_history(workspace)) if e.subject == subject), None)
        standing = kept_score if kept_score is not None else (previous.current if previous else None)
        entry = HistoryEntry(
            time=datetime.now(UTC).isoformat(timespec="seconds"), kind=kind, subject=subject, score=score,
            current=float(kept_score) if kept_score is not None else score, metric=METRICS.get(task, task),
            fingerprint=digest, changed=describe_change(previous, digest, settings),
            verdict=_verdict(score, standing), kept="previous" if kept_score is not None else "new",
            settings=settings, result=result)
        _append(workspace, entry)
    if entry.verdict == "worse":
        warnings.warn(worse_message(entry, standing, previous), UserWarning, stacklevel=2)
    return entry


def read_history(workspace: Workspace, *, subject: str | None = None) -> list[HistoryEntry]:
    """Return the history's entries, oldest first (of `subject` only when given); [] when there is none.

    A line that does not read as an entry (edited by hand) is skipped: the history reports, it decides nothing.
    """
    path = workspace.history_path
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = HistoryEntry(**json.loads(line))
        except (json.JSONDecodeError, TypeError):
            continue
        if subject is None or entry.subject == subject:
            entries.append(entry)
    return entries


def describe_change(previous: HistoryEntry | None, digest: str, settings: Mapping[str, Any]) -> str:
    """Return what differs from the subject's previous entry: its inputs, trials in all, other settings."""
    if previous is None:
        return "first result"
    changes = [] if previous.fingerprint == digest else ["inputs changed"]
    for key, value in settings.items():
        before = previous.settings.get(key)
        if key not in previous.settings or before == value:
            continue
        if key == "n_trials" and isinstance(value, int) and isinstance(before, int):
            changes.append(f"{value - before:+d} trial{'' if abs(value - before) == 1 else 's'} ({value} in all)")
        else:
            changes.append(f"{key} {_shown(value)} (was {_shown(before)})")
    return ", ".join(changes) or "nothing (same inputs and settings)"


def worse_message(entry: HistoryEntry, standing: float | None, previous: HistoryEntry | None) -> str:
    """Return the warning of a result worse than the one in effect before it."""
    what = "the ensemble" if entry.kind == "ensemble" else f"{entry.subject}'s tuning"
    before = f"the current one (OOF {standing:.6f}"
    before += f", {previous.when} UTC)" if previous is not None else ")"
    if entry.kept == "previous":
        outcome = "the current one is kept"
    elif entry.kind == "ensemble":
        outcome = "it replaced the current one, whose inputs had changed"
    else:
        outcome = "it replaced the current one"
    return (f"{what}: this result (OOF {entry.score:.6f}; {entry.changed}) is worse than {before}; {outcome} "
            f"(see: compkit history)")


def _verdict(score: float, standing: float | None) -> str:
    if standing is None:
        return "first"
    if score > standing + SCORE_TOLERANCE:
        return "better"
    return "worse" if score < standing - SCORE_TOLERANCE else "same"


def _append(workspace: Workspace, entry: HistoryEntry) -> None:
    """Append the entry as one line: the file is rewritten whole and renamed into place, never half a line."""
    path = workspace.history_path
    existing = path.read_bytes() if path.is_file() else b""
    if existing and not existing.endswith(b"\n"):
        existing += b"\n"
    line = json.dumps(asdict(entry), sort_keys=True, default=str) + "\n"
    with atomic_path(path) as temporary:
        temporary.write_bytes(existing + line.encode("utf-8"))


def _plain(values: Mapping[str, Any]) -> dict:
    """Return `values` as JSON would read them back (tuples as lists, numpy scalars as numbers)."""
    return json.loads(json.dumps(dict(values), default=_number))


def _number(value: Any) -> Any:
    try:
        return value.item()  # a numpy scalar
    except AttributeError:
        return str(value)


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)
