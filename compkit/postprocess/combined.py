"""Candidate tables -> predictions of union, concat and score models: pure, vectorised over all rows.

A candidate table holds several members' neighbour lists of the same queries merged into one candidate list
per query: the union of the members' top-k lists, ordered by their best rank in any member's list (ties: the
member listed first), with each member's rank and similarity of every candidate (see
`compkit.retrieval.search.combined_search`).

- union (match): a pair is matched when any member listed it with similarity >= that member's threshold;
  at most `max_matches`, best-ranked first. min2 on top: a posting the union leaves alone also keeps each
  member's nearest other posting whose similarity reaches that member's min2 threshold.
- concat: the weighted mean of the members' cosine similarities, which is the cosine similarity of the
  members' normalised embeddings concatenated with weights sqrt(w_j / sum w); re-sorted into neighbour
  lists that the single-model post-processing takes as they are.
- score (identify): each member's score of an individual is its best similarity among that member's
  top_n neighbours; an individual a member did not retrieve scores that member's lowest listed similarity
  for the query (a bound on what it would have scored). The weighted mean ranks the individuals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from compkit.metrics import label_sizes
from compkit.postprocess.top5 import NO_LABEL, first_occurrences

THRESHOLD_PARAM = "threshold:{}"
MIN2_PARAM = "min2_threshold:{}"
WEIGHT_PARAM = "weight:{}"


@dataclass(frozen=True)
class CandidateTable:
    """Merged candidates of n queries from m members.

    `indices` (n, K): reference rows, best rank first, -1 pads; `similarities` (m, n, K) float32, -inf where
    unknown or padded; `ranks` (m, n, K) int32: position in the member's own list, -1 where not listed.
    """

    indices: np.ndarray
    similarities: np.ndarray
    ranks: np.ndarray

    @property
    def listed(self) -> np.ndarray:
        return self.ranks >= 0


def merge_lists(indices: Sequence[np.ndarray], similarities: Sequence[np.ndarray]) -> CandidateTable:
    """Return the members' (n, k_j) neighbour lists (-1 pads) merged into one CandidateTable."""
    n_members, n_rows = len(indices), len(indices[0])
    depth = max(member.shape[1] for member in indices)
    stacked = np.full((n_members, n_rows, depth), -1, dtype=np.int64)
    for member, member_indices in enumerate(indices):
        stacked[member, :, : member_indices.shape[1]] = member_indices
    interleaved = stacked.transpose(1, 2, 0).reshape(n_rows, depth * n_members)  # column = rank * m + member
    first = first_occurrences(interleaved)
    column = np.cumsum(first, axis=1) - 1
    rows, columns = np.nonzero(first)
    width = int(first.sum(axis=1).max(initial=0))
    merged = np.full((n_rows, width), -1, dtype=np.int64)
    merged[rows, column[rows, columns]] = interleaved[rows, columns]

    n_reference = int(interleaved.max(initial=0)) + 1
    first_keys = rows * n_reference + interleaved[rows, columns]
    order = np.argsort(first_keys)
    sorted_keys, sorted_columns = first_keys[order], column[rows, columns][order]
    merged_similarities = np.full((n_members, n_rows, width), -np.inf, dtype=np.float32)
    ranks = np.full((n_members, n_rows, width), -1, dtype=np.int32)
    for member, (member_indices, member_similarities) in enumerate(zip(indices, similarities, strict=True)):
        row, rank = np.nonzero(member_indices >= 0)
        position = sorted_columns[np.searchsorted(sorted_keys, row * n_reference + member_indices[row, rank])]
        merged_similarities[member, row, position] = member_similarities[row, rank]
        ranks[member, row, position] = rank
    return CandidateTable(merged, merged_similarities, ranks)


def member_weights(members: Sequence[str], weights: Sequence[float], params: dict) -> np.ndarray:
    """Return the members' weights, summing to 1: fixed by the config, else the tuned `weight:<member>`."""
    values = np.asarray(weights if weights else [params[WEIGHT_PARAM.format(m)] for m in members], np.float64)
    return values / values.sum() if values.sum() > 0 else np.full(len(values), 1.0 / len(values))


class UnionMatches:
    """Keep masks and mean row-F1 of a union model for any per-member thresholds (rows: the table's queries)."""

    def __init__(self, table: CandidateTable, members: Sequence[str], *, max_matches: int) -> None:
        self.table, self.members, self.max_matches = table, list(members), max_matches
        n_rows = len(table.indices)
        self.valid = table.indices >= 0
        self.is_self = table.indices == np.arange(n_rows)[:, None]
        self.rows = np.arange(n_rows)
        listed_other = table.listed & ~self.is_self[None]
        rank_or_never = np.where(listed_other, table.ranks, np.iinfo(np.int32).max)
        self.nearest_other = rank_or_never.argmin(axis=2)  # (m, n): each member's nearest other, as a column
        nearest_similarity = np.take_along_axis(table.similarities, self.nearest_other[:, :, None], axis=2)[:, :, 0]
        self.nearest_other_similarity = np.where(listed_other.any(axis=2), nearest_similarity, -np.inf)

    def keep(self, params: dict) -> np.ndarray:
        """Return the (n, K) mask of kept candidates for `threshold:<member>` (and `min2_threshold:<member>`)."""
        keep = self.is_self.copy()
        for member, name in enumerate(self.members):
            threshold = params[THRESHOLD_PARAM.format(name)]
            keep |= self.table.listed[member] & (self.table.similarities[member] >= threshold)
        keep &= self.valid
        if self.max_matches and keep.shape[1] > self.max_matches:
            keep &= np.cumsum(keep, axis=1) <= self.max_matches
        if MIN2_PARAM.format(self.members[0]) in params:
            alone = ~(keep & ~self.is_self).any(axis=1)
            for member, name in enumerate(self.members):
                reaches = self.nearest_other_similarity[member] >= params[MIN2_PARAM.format(name)]
                keep[self.rows, self.nearest_other[member]] |= alone & reaches
        return keep


class UnionMatchF1(UnionMatches):
    """params -> mean row-F1 of the union's match lists (each candidate is listed once, so counts are exact)."""

    def __init__(self, table: CandidateTable, members: Sequence[str], labels: np.ndarray, *, max_matches: int):
        super().__init__(table, members, max_matches=max_matches)
        self.same = self.valid & (labels[np.clip(table.indices, 0, None)] == labels[:, None])
        self.group_sizes = label_sizes(labels)

    def row_scores(self, params: dict) -> np.ndarray:
        keep = self.keep(params)
        hits = np.count_nonzero(keep & self.same, axis=1)
        return 2.0 * hits / (self.group_sizes + np.count_nonzero(keep, axis=1))

    def __call__(self, params: dict) -> float:
        return float(np.mean(self.row_scores(params)))


def weighted_lists(table: CandidateTable, weights: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (similarities, indices) (n, <= depth): candidates by weighted mean similarity, best first."""
    weights = np.asarray(weights, dtype=np.float32)
    used = weights != 0  # a member weighted 0 is left out: its -inf (unknown) times 0 would drop the candidate
    similarities = table.similarities if used.all() else table.similarities[used]
    with np.errstate(invalid="ignore"):
        combined = np.tensordot(weights[used], similarities, axes=1)
    combined[table.indices < 0] = -np.inf
    order = np.argsort(-combined, axis=1, kind="stable")[:, :depth]
    similarities = np.take_along_axis(combined, order, axis=1)
    indices = np.take_along_axis(table.indices, order, axis=1)
    return similarities, np.where(np.isfinite(similarities), indices, -1)


def individual_scores(table: CandidateTable, label_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (individuals (n, C), scores (m, n, C)): each member's best listed similarity per individual.

    An individual a member did not retrieve gets that member's lowest listed similarity for the query;
    padded columns hold NO_LABEL and -inf.
    """
    n_members, n_rows, _ = table.similarities.shape
    labels = np.where(table.indices >= 0, label_codes[np.clip(table.indices, 0, None)], NO_LABEL)
    n_labels = int(label_codes.max(initial=0)) + 1
    row, column = np.nonzero(labels >= 0)
    keys = row * n_labels + labels[row, column]
    unique_keys, slot = np.unique(keys, return_inverse=True)
    key_row = unique_keys // n_labels
    starts = np.searchsorted(key_row, np.arange(n_rows))
    position = np.arange(len(unique_keys)) - starts[key_row]
    width = int(position.max(initial=-1)) + 1
    individuals = np.full((n_rows, width), NO_LABEL, dtype=np.int64)
    individuals[key_row, position] = unique_keys % n_labels
    scores = np.full((n_members, n_rows, width), -np.inf, dtype=np.float32)
    listed = table.listed[:, row, column]
    for member in range(n_members):
        best = np.full(len(unique_keys), -np.inf, dtype=np.float32)
        np.maximum.at(best, slot[listed[member]], table.similarities[member, row, column][listed[member]])
        floor = np.where(table.listed[member], table.similarities[member], np.inf).min(axis=1)
        floor[~np.isfinite(floor)] = -1.0  # a member that retrieved nothing: the lowest cosine similarity
        scores[member, key_row, position] = np.where(np.isfinite(best), best, floor[key_row])
    return individuals, scores


def top_individuals(
    individuals: np.ndarray, scores: np.ndarray, weights: np.ndarray, top: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Return each row's `top` individuals by weighted mean score and those scores (NO_LABEL / -inf pads)."""
    with np.errstate(invalid="ignore"):  # a weight of 0 times a padded slot's -inf: NaN, masked just below
        combined = np.tensordot(weights.astype(np.float32), scores, axes=1)
    combined[individuals == NO_LABEL] = -np.inf
    order = np.argsort(-combined, axis=1, kind="stable")[:, :top]
    labels = np.take_along_axis(individuals, order, axis=1)
    best = np.take_along_axis(combined, order, axis=1)
    if labels.shape[1] < top:
        pad = top - labels.shape[1]
        labels = np.pad(labels, ((0, 0), (0, pad)), constant_values=NO_LABEL)
        best = np.pad(best, ((0, 0), (0, pad)), constant_values=-np.inf)
    return labels, best
