"""What a study maximises: params -> OOF score of a single model's neighbour lists (match F1, identify MAP@5).

The OOF mean row-F1 of match lists as a function of (threshold, min2_threshold), in microseconds a call.
Neighbour rows are sorted by descending similarity, so the matches a threshold keeps are a prefix of each row.
Each neighbour entering its row's prefix changes that row's F1 by a fixed amount, known in advance, so the
mean F1 at a threshold is a base sum plus the sum of the changes of every entry at or above it: one binary
search in the entries' similarities, sorted once. min2 adds to each row whose nearest other posting falls
below the threshold a fixed change too, summed the same way over those rows' nearest similarities.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from compkit.config import CompetitionConfig
from compkit.errors import ConfigError
from compkit.metrics import label_sizes
from compkit.postprocess.new_individual import LabelSpecies, Top5Objective
from compkit.postprocess.top5 import NEW_INDIVIDUAL, neighbour_top5
from compkit.retrieval.head_scores import KNN_WEIGHT, fused_lists
from compkit.retrieval.single import OOFNeighbors


def match_evaluator(neighbors: OOFNeighbors, *, max_matches: int) -> Callable[[dict], float]:
    """Return params -> mean row-F1 of the OOF match lists those parameters give."""
    return PrefixMatchF1(neighbors, max_matches=max_matches)


def identify_evaluator(neighbors: OOFNeighbors, species: LabelSpecies | None = None) -> Top5Objective:
    """Return params -> MAP@5 of the OOF top-5 lists with new_individual inserted.

    With head scores, `params["knn_weight"]` (r) re-ranks the neighbours by r * kNN + (1 - r) * head first;
    each r's top 5 is computed once per study.
    """
    plain = neighbour_top5(neighbors.similarities, neighbors.indices, neighbors.labels)
    if neighbors.head_similarities is None:
        return Top5Objective(lambda params: plain, neighbors.query_truth, NEW_INDIVIDUAL, species)

    @functools.lru_cache(maxsize=64)
    def fused_top5(knn_weight: float):
        lists = fused_lists(neighbors.similarities, neighbors.indices, neighbors.head_similarities, knn_weight)
        return neighbour_top5(*lists, neighbors.labels)

    def top5(params: dict):
        weight = params.get(KNN_WEIGHT, 1.0)
        return plain if weight == 1.0 else fused_top5(float(weight))

    return Top5Objective(top5, neighbors.query_truth, NEW_INDIVIDUAL, species)


def evaluator(
    config: CompetitionConfig, neighbors: OOFNeighbors, species: LabelSpecies | None = None
) -> Callable[[dict], float]:
    """Return params -> the task's OOF score of `neighbors` (match: row-F1; identify: MAP@5)."""
    if config.task == "match":
        return match_evaluator(neighbors, max_matches=config.postprocess.max_matches)
    return identify_evaluator(neighbors, species)


class SuffixSums:
    """Sums of `values` over the entries whose key is at least x, for any x, by one binary search.

    x is compared in the keys' dtype, as numpy compares a float32 array with a Python float.
    """

    def __init__(self, keys: np.ndarray, values: np.ndarray) -> None:
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.sums = np.concatenate([np.cumsum(values[order][::-1])[::-1], [0.0]])

    def at_least(self, x: float) -> float:
        return float(self.sums[np.searchsorted(self.keys, self.keys.dtype.type(x), side="left")])


class PrefixMatchF1:
    """Mean row-F1 of the OOF match lists for any (threshold, min2_threshold); equal to `MatchMasker` then
    `compkit.metrics.row_f1`.

    A posting always matches itself. `row_scores` gives each row's F1 (a log2(k)-step binary search on all rows
    at once); a call gives their mean from precomputed sums (`SuffixSums`), which is what a trial needs.
    """

    def __init__(self, neighbors: OOFNeighbors, *, max_matches: int) -> None:
        indices, labels = neighbors.indices, neighbors.labels
        n_rows, depth = indices.shape
        if depth > max_matches:
            raise ConfigError(f"neighbour lists of depth {depth} exceed max_matches={max_matches}")
        similarities = np.where(indices >= 0, neighbors.similarities, -np.inf).astype(np.float32)
        order = np.argsort(-similarities, axis=1, kind="stable")  # padding last, wherever a backend put it
        similarities = np.take_along_axis(similarities, order, axis=1)
        indices = np.take_along_axis(indices, order, axis=1)
        self.rows = np.arange(n_rows)
        valid = indices >= 0
        same = valid & (labels[np.clip(indices, 0, None)] == labels[:, None])
        is_self = indices == self.rows[:, None]
        other = valid & ~is_self
        self.similarities = similarities
        self.predicted_before = _prefix_counts(valid)
        self.hits_before = _prefix_counts(same)
        self.self_column = np.where(is_self.any(axis=1), is_self.argmax(axis=1), depth)
        self.has_self = self.self_column < depth
        self.nearest_other = other.argmax(axis=1)
        self.nearest_other_similarity = np.where(other.any(axis=1), similarities[self.rows, self.nearest_other],
                                                 -np.inf)
        self.nearest_other_same = same[self.rows, self.nearest_other]
        self.group_sizes = label_sizes(labels)
        self._precompute_sums(valid)

    def _precompute_sums(self, valid: np.ndarray) -> None:
        kept = np.arange(self.similarities.shape[1] + 1)
        predicted, hits = self._counts(self.rows[:, None], kept[None, :])
        f1 = 2.0 * hits / (self.group_sizes[:, None] + predicted)  # (rows, depth + 1): F1 by prefix length
        self.base = float(f1[:, 0].sum())
        self.entering = SuffixSums(self.similarities[valid], np.diff(f1, axis=1)[valid])
        predicted, hits = self._counts(self.rows, self.nearest_other)
        with_nearest = 2.0 * (hits + self.nearest_other_same) / (self.group_sizes + predicted + 1)
        has_other = np.isfinite(self.nearest_other_similarity)
        self.min2_added = SuffixSums(self.nearest_other_similarity[has_other],
                                     (with_nearest - f1[self.rows, self.nearest_other])[has_other])

    def _counts(self, rows: np.ndarray, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (predicted, true) match counts of `rows` keeping prefixes of length `kept`, self included."""
        self_outside = self.has_self[rows] & (self.self_column[rows] >= kept)
        return self.predicted_before[rows, kept] + self_outside, self.hits_before[rows, kept] + self_outside

    def __call__(self, params: dict) -> float:
        threshold, min2_threshold = params["threshold"], params.get("min2_threshold")
        total = self.base + self.entering.at_least(threshold)
        if min2_threshold is not None and min2_threshold < threshold:
            total += self.min2_added.at_least(min2_threshold) - self.min2_added.at_least(threshold)
        return total / len(self.rows)

    def row_scores(self, threshold: float, min2_threshold: float | None = None) -> np.ndarray:
        kept = self.prefix_lengths(threshold)
        predicted, hits = self._counts(self.rows, kept)
        if min2_threshold is not None:
            added = (self.nearest_other >= kept) & (self.nearest_other_similarity >= min2_threshold)
            predicted = predicted + added
            hits = hits + (added & self.nearest_other_same)
        return 2.0 * hits / (self.group_sizes + predicted)

    def prefix_lengths(self, threshold: float) -> np.ndarray:
        """Return how many neighbours of each row reach `threshold` (rows sorted descending)."""
        depth = self.similarities.shape[1]
        flat = self.similarities.reshape(-1)
        row_start = self.rows * depth
        low = np.zeros(len(self.rows), dtype=np.int64)
        width = depth
        while width > 0:  # branch-free binary search on every row at once: low + width stays in the row
            half = width >> 1
            probe = np.take(flat, row_start + np.minimum(low + half, depth - 1))
            step = (probe >= threshold) & (low + half < depth)
            low += step * (width - half)
            width = half
        return low


def _prefix_counts(flags: np.ndarray) -> np.ndarray:
    """Return (n, k + 1) counts: column j holds how many of each row's first j flags are set."""
    counts = np.zeros((flags.shape[0], flags.shape[1] + 1), dtype=np.int32)
    np.cumsum(flags, axis=1, out=counts[:, 1:])
    return counts
