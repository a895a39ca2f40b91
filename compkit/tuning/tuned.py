"""A model's tuned parameters, `tuning/<model>.json`: one typed record, written and read here only.

`read_tuned` (in `compkit.tuning.study`) is the reader for a stage that uses the parameters: it refuses
missing or stale ones. `load_tuned` reads the file as it is, for those that only report on it or copy it.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

from compkit.errors import DataError
from compkit.workspace import read_json, write_json


@dataclass(frozen=True)
class TunedModel:
    """The best post-processing parameters of one model's study, with its OOF scores.

    `candidates`: the candidate set the OOF queries searched ("all" or "fold"); `other_candidates_score`: the
    same parameters' score with the other set (match only); `plot`: the score plot's file name;
    `trivial_score`: the OOF score of the trivial answer (match: each posting matches only itself; identify:
    every image new_individual), None in files written before it was recorded.
    """

    model: str
    params: dict
    oof_score: float
    default_score: float
    candidates: str
    other_candidates_score: float | None
    study: str
    n_trials: int
    plot: str
    trivial_score: float | None = None


def write_tuned(path: Path, tuned: TunedModel) -> None:
    """Write `tuned` as JSON to `path` (atomically)."""
    write_json(path, asdict(tuned))


def load_tuned(path: Path) -> TunedModel:
    """Return the tuned parameters stored in `path`, unchecked for freshness; DataError when unreadable."""
    stored = read_json(path)
    names = [field.name for field in fields(TunedModel)]
    required = [field.name for field in fields(TunedModel) if field.default is MISSING]
    missing = [name for name in required if not isinstance(stored, dict) or name not in stored]
    if missing:
        raise DataError(f"{path}: not a tuned-parameters file (no {missing[0]!r}); run compkit tune-threshold again")
    return TunedModel(**{name: stored[name] for name in names if name in stored})
