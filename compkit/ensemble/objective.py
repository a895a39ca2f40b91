"""The OOF score of a weighted ensemble as a function of its weights (and vote threshold), fast enough to tune.

Both objectives score exactly the lists that `compkit.ensemble.vote` writes for the same weights (they share
`compkit.ensemble.ballots`), with the competitions' metrics: mean row-F1 (match) and MAP@5 (identify). Both
metrics are means over rows, so either can score a subset of the rows (`rows`): the cross-fitted score tunes
on some folds' rows and scores the others'.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from compkit.ensemble.ballots import MatchVotes, RankVotes
from compkit.metrics import TOP_K, label_sizes

MAX_VOTE_LEVELS = 64


class VoteF1:
    """Mean row-F1 of a weighted vote over fixed match lists, for any weights and vote thresholds.

    A row's F1 needs only how many of its pairs are kept and how many of those are true; both are sums over
    the row's pairs, grouped by pattern once here, so a call is two sparse (rows x patterns) products.
    """

    def __init__(self, votes: MatchVotes, labels: np.ndarray) -> None:
        labels = np.asarray(labels)
        shape = (votes.n_rows, len(votes.membership))
        where = (votes.rows, votes.pattern_of_pair)
        true_pair = (labels[votes.rows] == labels[votes.columns]).astype(np.float64)
        self.votes = votes
        self.pairs_by_pattern = sp.csr_matrix((np.ones(len(votes.rows)), where), shape=shape)
        self.true_pairs_by_pattern = sp.csr_matrix((true_pair, where), shape=shape)
        self.true_pairs_by_pattern.eliminate_zeros()
        self.group_sizes = label_sizes(labels).astype(np.float64)

    def row_scores(self, weights: np.ndarray, vote_threshold: float | np.ndarray) -> np.ndarray:
        """Return each row's F1, shape (rows,), or (rows, thresholds) for an array of thresholds."""
        kept = self.votes.kept_patterns(weights, vote_threshold).astype(np.float64)
        predicted = 1.0 + self.pairs_by_pattern @ kept  # a posting always matches itself, truly
        hits = 1.0 + self.true_pairs_by_pattern @ kept
        sizes = self.group_sizes if kept.ndim == 1 else self.group_sizes[:, None]
        return 2.0 * hits / (sizes + predicted)

    def score(self, weights: np.ndarray, vote_threshold: float | None, rows: np.ndarray | None = None) -> float:
        """Return the mean row-F1, over `rows` (a boolean mask) when given."""
        return float(_over(self.row_scores(weights, vote_threshold), rows).mean())

    def best(self, weights: np.ndarray, rows: np.ndarray | None = None) -> tuple[float, float]:
        """Return (score, vote threshold): the best of the thresholds at which the kept pairs change."""
        # 1.0 as well: when no pair has every vote, it keeps each posting alone.
        levels = np.unique(np.append(np.minimum(self.votes.vote_levels(weights), 1.0), 1.0))
        if len(levels) > MAX_VOTE_LEVELS:
            levels = levels[np.unique(np.linspace(0, len(levels) - 1, MAX_VOTE_LEVELS).round().astype(np.int64))]
        scores = _over(self.row_scores(weights, levels), rows).mean(axis=0)
        best = int(np.argmax(scores))
        return float(scores[best]), float(levels[best])


class RankMAP:
    """MAP@5 of weighted reciprocal-rank votes over fixed top-k lists, for any weights.

    A row scores 1 / rank of its true id, and that rank is one plus the candidates that beat it (a higher
    score, or an equal one with a smaller code: `RankVotes.top`'s order), counted over all rows at once.
    """

    def __init__(self, votes: RankVotes, truth: np.ndarray, *, top: int = TOP_K) -> None:
        rows = np.arange(votes.n_rows)
        self.votes = votes
        self.top = min(top, TOP_K)
        self.truth_code = votes.code_of(truth)
        self.truth_candidate = votes.candidate_of(rows, self.truth_code)

    def row_scores(self, weights: np.ndarray, vote_threshold: float | None = None) -> np.ndarray:
        """Return each row's average precision at 5 (a rank vote has no threshold: `vote_threshold` is unused)."""
        votes = self.votes
        scores = votes.scores(weights)
        ranked = self.truth_candidate >= 0
        truth_score = np.where(ranked, scores[np.maximum(self.truth_candidate, 0)], np.inf)[votes.rows]
        ahead = (scores > truth_score) | ((scores == truth_score) & (votes.codes < self.truth_code[votes.rows]))
        rank = 1.0 + np.bincount(votes.rows, weights=ahead, minlength=votes.n_rows)
        return np.where(ranked & (rank <= self.top), 1.0 / rank, 0.0)

    def score(self, weights: np.ndarray, vote_threshold: float | None = None, rows: np.ndarray | None = None) -> float:
        """Return MAP@5, over `rows` (a boolean mask) when given."""
        return float(_over(self.row_scores(weights), rows).mean())

    def best(self, weights: np.ndarray, rows: np.ndarray | None = None) -> tuple[float, None]:
        """Return (score, None): a rank vote has no threshold to choose."""
        return self.score(weights, rows=rows), None


def _over(row_scores: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    """Return the row scores of the rows `rows` keeps (all of them when it is None)."""
    return row_scores if rows is None else row_scores[rows]
