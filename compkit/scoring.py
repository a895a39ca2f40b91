"""Scoring a submission file against a solution file, exactly as the competition does."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from compkit.config import CompetitionConfig
from compkit.data.tables import read_table
from compkit.data.tables import solution_path as default_solution_path
from compkit.errors import DataError
from compkit.metrics import average_precision_at_5, row_f1
from compkit.submission import MatchSubmission, load_submission
from compkit.workspace import Workspace

Metric = Literal["mean_row_f1", "map_at_5"]


@dataclass(frozen=True)
class ScoreResult:
    """A submission's score, with each row's score in the solution's row order."""

    score: float
    metric: Metric
    n_rows: int
    ids: np.ndarray
    row_scores: np.ndarray

    @property
    def standard_error(self) -> float:
        """The score's standard error over rows (the rows' sample standard deviation / sqrt(rows)); 0 for one row."""
        return _standard_error(self.row_scores)


@dataclass(frozen=True)
class Difference:
    """`a - b` of two submissions scored on the same solution, with its paired standard error over rows."""

    a: str
    b: str
    difference: float
    standard_error: float
    n_rows: int


def paired_difference(a: str, a_result: ScoreResult, b: str, b_result: ScoreResult) -> Difference:
    """Return the score difference `a - b` and its standard error, pairing each solution row's two scores.

    Pairing removes what the rows share (an easy row is easy for both), so the error is that of the difference,
    far smaller than either score's own when the submissions agree on most rows.
    """
    if not np.array_equal(a_result.ids, b_result.ids):
        raise ValueError(f"{a} and {b} were not scored on the same solution rows")
    per_row = np.asarray(a_result.row_scores, dtype=np.float64) - np.asarray(b_result.row_scores, dtype=np.float64)
    return Difference(a, b, float(per_row.mean()), _standard_error(per_row), len(per_row))


def _standard_error(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def score_submission(
    config: CompetitionConfig, workspace: Workspace, submission_path: Path, *, solution_path: Path | None = None
) -> ScoreResult:
    """Return the score of the submission at `submission_path`, validated in full before it is scored.

    The solution has columns [columns.id, columns.label] (extra columns are ignored); for identify its labels
    already read `new_individual` for individuals unseen in training.
    """
    solution_path = Path(solution_path) if solution_path else default_solution_path(config, workspace)
    solution = read_solution(solution_path, config)
    ids = solution[config.columns.id].to_numpy(dtype=object)
    labels = solution[config.columns.label].to_numpy(dtype=object)
    submission = load_submission(Path(submission_path), config, expected_ids=ids)
    if isinstance(submission, MatchSubmission):
        codes, _ = pd.factorize(labels)
        scores = row_f1(codes, submission.indptr, submission.indices)
        metric: Metric = "mean_row_f1"
    else:
        scores = average_precision_at_5(labels, submission.predictions)
        metric = "map_at_5"
    return ScoreResult(score=float(scores.mean()), metric=metric, n_rows=len(ids), ids=ids, row_scores=scores)


def read_solution(path: Path, config: CompetitionConfig) -> pd.DataFrame:
    """Return the solution table (id and label columns), raising DataError for a missing, empty or repeated id."""
    id_column, label_column = config.columns.id, config.columns.label
    solution = read_table(path, required=[id_column, label_column])[[id_column, label_column]]
    if solution.empty:
        raise DataError(f"{path}: no rows")
    duplicated = solution[id_column].duplicated().to_numpy()
    if duplicated.any():
        row = int(duplicated.argmax())
        raise DataError(f"{path}: row {row + 1}: duplicate id {solution[id_column].iloc[row]!r}")
    blank = (solution[label_column] == "").to_numpy()
    if blank.any():
        row = int(blank.argmax())
        raise DataError(f"{path}: row {row + 1}: empty {label_column} for id {solution[id_column].iloc[row]!r}")
    return solution
