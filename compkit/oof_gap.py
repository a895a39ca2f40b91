"""Where an identify model's OOF-to-test gap comes from: its MAP@5 on seen and on new_individual queries.

An identify score is a mix of two kinds of queries: those whose individual the gallery holds (scored by
where the individual ranks) and those whose truth is `new_individual` (scored by where new_individual
ranks). OOF and test mix them in different shares, and a model can do better on one kind in OOF than on
test. Splitting both scores by kind tells the two apart: `OOF at test's share` is the model's OOF scores per
kind mixed in the test's share of new_individual queries (the solution's, else the config's
`expected_new_fraction`). What the share explains is OOF - that; the rest is the model doing worse on test
queries of the same kind.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compkit.config import CompetitionConfig
from compkit.data.tables import solution_path
from compkit.ensemble.ballots import RankVotes
from compkit.ensemble.objective import RankMAP
from compkit.ensemble.vote import load_inputs
from compkit.ensemble.weights import oof_paths, oof_truth, read_tuned_ensemble
from compkit.errors import CompkitError
from compkit.metrics import average_precision_at_5
from compkit.scoring import read_solution, score_submission
from compkit.submission import load_submission
from compkit.workspace import Workspace

ENSEMBLE = "ensemble"


@dataclass(frozen=True)
class ByKind:
    """A MAP@5 split by query kind; a kind with no query scores None."""

    seen: float | None  # queries of individuals the gallery holds
    new: float | None  # queries whose truth is new_individual
    new_share: float  # the share of new_individual queries

    @property
    def score(self) -> float:
        """The whole score: the kinds mixed in their own share."""
        return self.at_share(self.new_share)

    def at_share(self, share: float) -> float:
        """Return the score these per-kind scores give a query set with `share` new_individual queries."""
        seen = 0.0 if self.seen is None else self.seen
        new = 0.0 if self.new is None else self.new
        return (1.0 - share) * seen + share * new


def by_kind(row_scores: np.ndarray, truth: np.ndarray, new_individual: str) -> ByKind:
    """Return the mean of `row_scores` over seen and over new_individual queries (truth == new_individual)."""
    row_scores, new = np.asarray(row_scores, dtype=np.float64), np.asarray(truth, dtype=object) == new_individual
    if len(row_scores) != len(new):
        raise ValueError(f"{len(row_scores)} row scores for {len(new)} truths")
    seen = ~new
    return ByKind(float(row_scores[seen].mean()) if seen.any() else None,
                  float(row_scores[new].mean()) if new.any() else None,
                  float(new.mean()) if len(new) else 0.0)


@dataclass(frozen=True)
class GapRow:
    """One model's (or the ensemble's) scores by kind on OOF and, where the test truth is known, on test."""

    model: str
    oof: ByKind | None
    test: ByKind | None

    def oof_at(self, share: float | None) -> float | None:
        return None if self.oof is None or share is None else self.oof.at_share(share)


def gap_rows(config: CompetitionConfig, workspace: Workspace, models: list[str], *,
             ensemble_csv=None, solution=None) -> list[GapRow]:
    """Return each model's GapRow, then the ensemble's when `ensemble_csv` is given (identify only).

    A model's OOF side scores its OOF CSV; the ensemble's, the tuned rank ensemble's OOF lists (its weights
    over the models' OOF CSVs), when tuning/ensemble.json is fresh for those models. The test side needs the
    solution (`solution`, default the config's when its file is there).
    """
    if config.task != "identify":
        raise ValueError("the seen / new_individual split is an identify report")
    new_individual = config.submission.new_individual
    ids, truth = oof_truth(config, workspace)
    oof = {name: _oof_by_kind(config, workspace, name, ids, truth) for name in models}
    names = list(models)
    if ensemble_csv is not None:
        oof[ENSEMBLE] = _ensemble_oof_by_kind(config, workspace, models, ids, truth)
        names.append(ENSEMBLE)
    if solution is None and config.data.solution and solution_path(config, workspace).is_file():
        solution = solution_path(config, workspace)
    test_truth = None if solution is None else read_solution(solution, config).set_index(config.columns.id)
    rows = []
    for name in names:
        test = None
        csv = ensemble_csv if name == ENSEMBLE else workspace.submission_csv(name)
        if test_truth is not None and csv.is_file():
            result = score_submission(config, workspace, csv, solution_path=solution)
            labels = test_truth[config.columns.label].loc[result.ids].to_numpy(dtype=object)
            test = by_kind(result.row_scores, labels, new_individual)
        rows.append(GapRow(name, oof[name], test))
    return rows


def new_share_of_test(config: CompetitionConfig, rows: list[GapRow]) -> float | None:
    """Return the test's share of new_individual queries: the solution's, else `expected_new_fraction`."""
    known = [row.test.new_share for row in rows if row.test is not None]
    return known[0] if known else config.expected_new_fraction


def _oof_by_kind(config, workspace: Workspace, name: str, ids, truth) -> ByKind | None:
    path = workspace.oof_csv(name)
    if not path.is_file():
        return None
    predictions = load_submission(path, config, expected_ids=ids).predictions
    return by_kind(average_precision_at_5(truth, predictions), truth, config.submission.new_individual)


def _ensemble_oof_by_kind(config, workspace: Workspace, models: list[str], ids, truth) -> ByKind | None:
    try:
        tuned = read_tuned_ensemble(config, workspace, models)
    except CompkitError:
        return None
    if tuned is None or tuned.method != "rank":
        return None
    submissions = load_inputs(config, oof_paths(config, workspace, models), expected_ids=ids)
    objective = RankMAP(RankVotes.from_submissions(submissions), truth, top=config.submission.max_predictions)
    return by_kind(objective.row_scores(np.asarray(tuned.weights, dtype=np.float64)), truth,
                   config.submission.new_individual)

