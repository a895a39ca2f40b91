"""What a study maximises: params -> OOF score of a single model's neighbour lists (match F1, identify MAP@5).

The OOF mean row-F1 of match lists as a function of (threshold, min2_threshold), in microseconds a call.
Neighbour rows are sorted by descending similarity, so the matches a threshold keeps are a prefix of each row.
Each neighbour entering its row's prefix changes that row's F1 by a fixed amount, known in advance, so the
mean F1 at a threshold is a base sum plus the sum of the changes of every entry at or above it: one binary
search in the entries' similarities, sorted once. min2 adds to each row whose nearest other posting falls
below the threshold a fixed change too, summed the same way over those rows' nearest similarities.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np

from compkit.config import CompetitionConfig
from compkit.errors import ConfigError
from compkit.metrics import label_sizes
from compkit.postprocess.group_sizes import GROUP_SIZE_WEIGHT, calibrated_other_counts, target_sizes
from compkit.postprocess.mutual import MUTUAL_TOP, mutual_filter, mutual_ranks
from compkit.postprocess.new_individual import LabelSpecies, Top5Objective
from compkit.postprocess.query_gallery import gallery_top5
from compkit.postprocess.top5 import NEW_INDIVIDUAL, neighbour_top5
from compkit.retrieval.head_scores import KNN_WEIGHT, fused_lists
from compkit.retrieval.single import OOFNeighbors


def match_evaluator(neighbors: OOFNeighbors, *, max_matches: int, postprocess=None) -> Callable[[dict], float]:
    """Return params -> mean row-F1 of the OOF match lists those parameters give.

    `postprocess` (the config's PostprocessSpace) switches on the opt-in options it asks for: the mutual-neighbour
    filter (`mutual_top`) and group-size calibration (`calibrate_group_sizes`).
    """
    if postprocess is not None and (postprocess.mutual_top is not None or postprocess.calibrate_group_sizes):
        return OptionsMatchF1(neighbors, max_matches=max_matches, mutual=postprocess.mutual_top is not None)
    return PrefixMatchF1(neighbors, max_matches=max_matches)


def identify_evaluator(neighbors: OOFNeighbors, species: LabelSpecies | None = None) -> Top5Objective:
    """Return params -> MAP@5 of the OOF top-5 lists with new_individual inserted.

    With head scores, `params["knn_weight"]` (r) re-ranks the neighbours by r * kNN + (1 - r) * head first;
    each r's top 5 is computed once per study. With peers (`test_in_gallery`), `params["gallery_threshold"]`
    adds the confident OOF queries of each fold to its gallery (compkit.postprocess.query_gallery).
    """
    plain = neighbour_top5(neighbors.similarities, neighbors.indices, neighbors.labels)
    if neighbors.head_similarities is None:
        return Top5Objective(lambda params: gallery_top5(*plain, neighbors.peers, params), neighbors.query_truth,
                             NEW_INDIVIDUAL, species)

    @functools.lru_cache(maxsize=64)
    def fused_top5(knn_weight: float):
        lists = fused_lists(neighbors.similarities, neighbors.indices, neighbors.head_similarities, knn_weight)
        return neighbour_top5(*lists, neighbors.labels)

    def top5(params: dict):
        weight = params.get(KNN_WEIGHT, 1.0)
        return gallery_top5(*(plain if weight == 1.0 else fused_top5(float(weight))), neighbors.peers, params)

    return Top5Objective(top5, neighbors.query_truth, NEW_INDIVIDUAL, species)


def evaluator(
    config: CompetitionConfig, neighbors: OOFNeighbors, species: LabelSpecies | None = None
) -> Callable[[dict], float]:
    """Return params -> the task's OOF score of `neighbors` (match: row-F1; identify: MAP@5)."""
    if config.task == "match":
        return match_evaluator(neighbors, max_matches=config.postprocess.max_matches, postprocess=config.postprocess)
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

    def calibrated_row_scores(self, params: dict, targets: np.ndarray) -> np.ndarray:
        """Return each row's F1 with the rule's lists calibrated to `targets` (compkit.postprocess.group_sizes).

        Equal to `match_mask` then `calibrated_keep` then row F1, from the prefix counts (one binary search)."""
        depth = self.similarities.shape[1]
        columns = self.prefix_lengths(params["threshold"])
        kept = self.predicted_before[self.rows, columns] - (self.self_column < columns)
        min2_threshold = params.get("min2_threshold")
        if min2_threshold is not None:
            kept = np.where((kept == 0) & (self.nearest_other_similarity >= min2_threshold), 1, kept)
        next_column = kept + (self.self_column <= kept)
        next_similarity = np.where(next_column < depth,
                                   self.similarities[self.rows, np.minimum(next_column, depth - 1)], -np.inf)
        listed = self.predicted_before[:, -1] - self.has_self
        counts = calibrated_other_counts(kept, next_similarity, listed, targets, params[GROUP_SIZE_WEIGHT])
        predicted, hits = self._counts(self.rows, counts + (self.self_column < counts))
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


class OptionsMatchF1:
    """params -> OOF mean row-F1 with the opt-in match options: the mutual-neighbour filter (`mutual_top`, r) and
    group-size calibration (`group_size_weight`), each present in `params` when the config switches it on.

    Each r's filtered lists get their own `PrefixMatchF1`, built on first use (the mutual ranks once per study);
    calibration costs one binary search and one sort of the rows a call, instead of `PrefixMatchF1`'s sums.
    """

    def __init__(self, neighbors: OOFNeighbors, *, max_matches: int, mutual: bool) -> None:
        self.neighbors, self.max_matches = neighbors, max_matches
        self.ranks = mutual_ranks(neighbors.indices) if mutual else None
        # the OOF rows are the training rows: their sizes, spread over the rows, are each row's target
        self.targets = target_sizes(len(neighbors.labels), label_sizes(neighbors.labels))
        self.filtered = functools.lru_cache(maxsize=16)(self._filtered)

    def _filtered(self, top: int | None) -> PrefixMatchF1:
        neighbors = self.neighbors
        if top is not None:
            similarities, indices = mutual_filter(neighbors.similarities, neighbors.indices, top, ranks=self.ranks)
            neighbors = dataclasses.replace(neighbors, similarities=similarities, indices=indices)
        return PrefixMatchF1(neighbors, max_matches=self.max_matches)

    def prefix(self, params: dict) -> PrefixMatchF1:
        top = params.get(MUTUAL_TOP)
        return self.filtered(None if top is None or self.ranks is None else int(round(top)))

    def row_scores(self, params: dict) -> np.ndarray:
        prefix = self.prefix(params)
        if GROUP_SIZE_WEIGHT in params:
            return prefix.calibrated_row_scores(params, self.targets)
        return prefix.row_scores(params["threshold"], params.get("min2_threshold"))

    def __call__(self, params: dict) -> float:
        if GROUP_SIZE_WEIGHT in params:
            return float(self.row_scores(params).mean())
        return self.prefix(params)(params)
