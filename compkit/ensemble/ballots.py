"""The candidates of a vote over fixed inputs, gathered once, so that any weight vector is cheap to apply.

match (`MatchVotes`): every (posting, match) pair that any input predicts, with the set of inputs predicting
it coded as a bit pattern. Pairs share few distinct patterns (at most 2^inputs - 1), so the votes of a
weight vector are one small (patterns x inputs) product, and the pairs a threshold keeps follow by lookup.
identify (`RankVotes`): every (row, id) candidate with each input's reciprocal-rank contribution 1 / (r + 1);
the scores of a weight vector are one (candidates x inputs) product.

The ensemble (`compkit.ensemble.vote`) and its tuner (`compkit.ensemble.weights`) both go through these classes,
so a tuned score is exactly the score of the ensemble that is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from compkit.errors import ConfigError
from compkit.metrics import PAD_ID
from compkit.submission import IdentifySubmission, MatchSubmission

MAX_MATCH_INPUTS = 62  # one int64 bit per input
VOTE_TOLERANCE = 1e-12
SCORE_DECIMALS = 12  # rounding makes exactly tied reciprocal-rank sums tie in floating point too


@dataclass(frozen=True)
class MatchVotes:
    """Every off-diagonal (row, column) pair some input predicts, in row then column order.

    `pattern_of_pair[p]` indexes `membership`, whose row says which inputs predict pair p (1.0) or not (0.0).
    """

    n_rows: int
    rows: np.ndarray
    columns: np.ndarray
    pattern_of_pair: np.ndarray
    membership: np.ndarray

    @classmethod
    def from_submissions(cls, submissions: Sequence[MatchSubmission]) -> MatchVotes:
        if len(submissions) > MAX_MATCH_INPUTS:
            raise ConfigError(f"a vote combines at most {MAX_MATCH_INPUTS} CSVs, got {len(submissions)}")
        n_rows = len(submissions[0].ids)
        codes = sp.csr_matrix((n_rows, n_rows), dtype=np.int64)
        for bit, submission in enumerate(submissions):
            codes = codes + _pair_matrix(submission.indptr, submission.indices, n_rows, code=1 << bit)
        codes = codes.tocsr()
        codes.sort_indices()
        patterns, pattern_of_pair = _number_patterns(codes.data, len(submissions))
        membership = ((patterns[:, None] >> np.arange(len(submissions))) & 1).astype(np.float64)
        rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(codes.indptr))
        return cls(n_rows, rows, codes.indices.astype(np.int64), pattern_of_pair, membership)

    def kept_patterns(self, weights: np.ndarray, vote_threshold: float | np.ndarray) -> np.ndarray:
        """Return which patterns reach `vote_threshold` of the total weight: (patterns,), or (patterns, thresholds)."""
        votes = self.membership @ np.asarray(weights, dtype=np.float64)
        needed = np.asarray(vote_threshold, dtype=np.float64) * float(np.sum(weights)) - VOTE_TOLERANCE
        return votes[:, None] >= needed[None, :] if needed.ndim else votes >= needed

    def vote_levels(self, weights: np.ndarray) -> np.ndarray:
        """Return every vote threshold (share of the total weight) at which the kept pairs change, ascending."""
        votes = np.unique(self.membership @ np.asarray(weights, dtype=np.float64))
        return votes[votes > 0] / float(np.sum(weights))

    def match_lists(self, weights: np.ndarray, vote_threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Return CSR (indptr, indices): each row itself plus the pairs reaching `vote_threshold`, sorted."""
        kept = self.kept_patterns(weights, vote_threshold)[self.pattern_of_pair]
        indptr = np.zeros(self.n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.rows[kept], minlength=self.n_rows), out=indptr[1:])
        shape = (self.n_rows, self.n_rows)
        pairs = sp.csr_matrix((np.ones(int(kept.sum())), self.columns[kept], indptr), shape=shape)
        lists = pairs + sp.identity(self.n_rows, format="csr")  # merges each sorted row with its diagonal
        lists.sort_indices()
        return lists.indptr.astype(np.int64), lists.indices.astype(np.int64)


def _number_patterns(codes: np.ndarray, n_inputs: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (the distinct codes ascending, each code's position among them)."""
    if n_inputs > 20:
        patterns, position = np.unique(codes, return_inverse=True)
        return patterns, position.reshape(-1)
    present = np.zeros(1 << n_inputs, dtype=bool)  # a lookup table instead of sorting millions of pairs
    present[codes] = True
    position = np.cumsum(present) - 1
    return np.flatnonzero(present), position[codes]


def _pair_matrix(indptr: np.ndarray, indices: np.ndarray, n_rows: int, *, code: int) -> sp.csr_matrix:
    """Return the (n, n) matrix holding `code` at each predicted off-diagonal pair (a pair listed twice once)."""
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(indptr))
    off_diagonal = indices != rows
    matrix = sp.csr_matrix(
        (np.ones(int(off_diagonal.sum()), dtype=np.int64), (rows[off_diagonal], indices[off_diagonal])),
        shape=(n_rows, n_rows),
    )
    matrix.sum_duplicates()
    matrix.data[:] = code
    return matrix


@dataclass(frozen=True)
class RankVotes:
    """Every (row, id) candidate some input ranks, in row then code order.

    `codes` number the ids by first appearance in the inputs stacked side by side (row by row), which is
    also the order that breaks ties; `contributions[c, i]` is 1 / (r + 1) when input i ranks candidate c at r.
    """

    n_rows: int
    rows: np.ndarray
    codes: np.ndarray
    names: np.ndarray
    contributions: np.ndarray

    @classmethod
    def from_submissions(cls, submissions: Sequence[IdentifySubmission]) -> RankVotes:
        depth = submissions[0].predictions.shape[1]
        stacked = np.concatenate([s.predictions for s in submissions], axis=1)
        n_rows, width = stacked.shape
        present = stacked != PAD_ID
        entry_rows = np.broadcast_to(np.arange(n_rows)[:, None], (n_rows, width))[present]
        entry_inputs = np.broadcast_to(np.repeat(np.arange(len(submissions)), depth), (n_rows, width))[present]
        entry_ranks = np.broadcast_to(np.tile(np.arange(depth), len(submissions)), (n_rows, width))[present]
        entry_codes, names = pd.factorize(stacked[present])
        keys, candidate_of_entry = np.unique(entry_rows * len(names) + entry_codes, return_inverse=True)
        contributions = np.zeros((len(keys), len(submissions)), dtype=np.float64)
        # Inputs are validated to list an id once per row, so no two entries share a (candidate, input) cell.
        contributions[candidate_of_entry.reshape(-1), entry_inputs] = 1.0 / (entry_ranks + 1.0)
        rows, codes = np.divmod(keys, len(names))
        return cls(n_rows, rows, codes, np.asarray(names, dtype=object), contributions)

    def scores(self, weights: np.ndarray) -> np.ndarray:
        """Return each candidate's weighted reciprocal-rank score."""
        return np.round(self.contributions @ np.asarray(weights, dtype=np.float64), SCORE_DECIMALS)

    def code_of(self, names: Sequence[str]) -> np.ndarray:
        """Return the code of each name, -1 for a name no input ranks."""
        return pd.Index(self.names).get_indexer(np.asarray(names, dtype=object))

    def candidate_of(self, rows: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Return the candidate index of each (row, code), -1 where that row has no such candidate."""
        keys = self.rows * len(self.names) + self.codes  # ascending: candidates are in row then code order
        wanted = np.asarray(rows) * len(self.names) + np.asarray(codes)
        found = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
        return np.where((np.asarray(codes) >= 0) & (keys[found] == wanted), found, -1)

    def top(self, weights: np.ndarray, top: int) -> np.ndarray:
        """Return (n, top) ids ranked by score, ties broken by code; rows with fewer candidates padded."""
        scores = self.scores(weights)
        order = np.lexsort((self.codes, -scores, self.rows))
        sorted_rows = self.rows[order]
        rank_in_row = np.arange(len(order)) - np.searchsorted(sorted_rows, sorted_rows, side="left")
        keep = rank_in_row < top
        predictions = np.full((self.n_rows, top), PAD_ID, dtype=object)
        predictions[sorted_rows[keep], rank_in_row[keep]] = self.names[self.codes[order][keep]]
        return predictions
