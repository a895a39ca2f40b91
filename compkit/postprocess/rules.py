"""Neighbours -> predictions: match lists by threshold, identify top-5 with new_individual. Vectorised.

Neighbour lists are dense (n, k) arrays sorted by descending similarity, as every kNN backend returns.
"""

from __future__ import annotations

import numpy as np

from compkit.metrics import average_precision_at_5, row_f1

__all__ = ["MatchMasker", "average_precision_at_5", "insert_new_individual", "match_f1", "match_mask", "top_labels"]

NO_LABEL = -1


class MatchMasker:
    """Keeps matches from fixed (n, k) neighbour lists for any thresholds; what no threshold changes is precomputed.

    A row keeps itself, every neighbour with similarity >= threshold, at most `max_matches` in all; with a
    `min2_threshold` ("min2": every product has at least two postings) it also keeps its nearest other
    posting when that one's similarity reaches the lower `min2_threshold`.
    """

    def __init__(self, similarities: np.ndarray, indices: np.ndarray, *, max_matches: int = 50) -> None:
        self.similarities = similarities
        self.max_matches = max_matches
        self.valid = indices >= 0
        self.is_self = indices == np.arange(len(indices))[:, None]
        other = ~self.is_self & self.valid
        self.rows = np.arange(len(indices))
        self.nearest_other = other.argmax(axis=1)
        nearest_similarity = similarities[self.rows, self.nearest_other]
        self.nearest_other_similarity = np.where(other.any(axis=1), nearest_similarity, -np.inf)

    def __call__(self, threshold: float, min2_threshold: float | None = None) -> np.ndarray:
        keep = self.similarities >= threshold
        keep |= self.is_self
        keep &= self.valid
        if min2_threshold is not None:
            keep[self.rows, self.nearest_other] |= self.nearest_other_similarity >= min2_threshold
        if self.max_matches and keep.shape[1] > self.max_matches:
            keep &= np.cumsum(keep, axis=1) <= self.max_matches
        return keep


def match_mask(
    similarities: np.ndarray,
    indices: np.ndarray,
    threshold: float,
    *,
    max_matches: int = 50,
    min2_threshold: float | None = None,
) -> np.ndarray:
    """Return a boolean (n, k) mask of the neighbours kept as matches (see MatchMasker)."""
    return MatchMasker(similarities, indices, max_matches=max_matches)(threshold, min2_threshold)


def match_f1(labels: np.ndarray, indices: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Return row-wise F1 of the kept neighbours (each row's truth: every row sharing its label)."""
    indptr = np.zeros(len(keep) + 1, dtype=np.int64)
    np.cumsum(keep.sum(axis=1), out=indptr[1:])
    return row_f1(labels, indptr, indices[keep], assume_unique=True)


def first_occurrences(labels: np.ndarray) -> np.ndarray:
    """Return a boolean mask marking, in each row, the first position of every distinct label."""
    order = np.argsort(labels, axis=1, kind="stable")
    sorted_labels = np.take_along_axis(labels, order, axis=1)
    first_sorted = np.ones_like(sorted_labels, dtype=bool)
    first_sorted[:, 1:] = sorted_labels[:, 1:] != sorted_labels[:, :-1]
    first = np.empty_like(first_sorted)
    np.put_along_axis(first, order, first_sorted, axis=1)
    return first & (labels != NO_LABEL)


def top_labels(similarities: np.ndarray, neighbour_labels: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Return each row's `top` distinct labels by best similarity and those scores (NO_LABEL / -inf pads)."""
    first = first_occurrences(neighbour_labels)
    rank = np.cumsum(first, axis=1) - 1
    keep = first & (rank < top)
    rows, cols = np.nonzero(keep)
    labels_out = np.full((len(neighbour_labels), top), NO_LABEL, dtype=np.int64)
    scores_out = np.full((len(neighbour_labels), top), -np.inf, dtype=np.float32)
    labels_out[rows, rank[rows, cols]] = neighbour_labels[rows, cols]
    scores_out[rows, rank[rows, cols]] = similarities[rows, cols]
    return labels_out, scores_out


def insert_new_individual(
    labels: np.ndarray, scores: np.ndarray, threshold: float | np.ndarray, new_individual: int, *, top: int = 5
) -> np.ndarray:
    """Return (n, top) predictions with `new_individual` placed before the first score below `threshold`."""
    thresholds = np.broadcast_to(np.asarray(threshold, dtype=np.float32), (len(labels),))
    position = (scores >= thresholds[:, None]).sum(axis=1)
    columns = np.arange(top + 1)[None, :]
    source = columns - (columns > position[:, None])
    padded = np.concatenate([labels, np.full((len(labels), 1), NO_LABEL, dtype=labels.dtype)], axis=1)
    out = np.take_along_axis(padded, np.clip(source, 0, labels.shape[1]), axis=1)
    out[columns == position[:, None]] = new_individual
    return out[:, :top]


def blend_embeddings(embeddings, similarities: np.ndarray, indices: np.ndarray, threshold: float):
    """Return each row replaced by the similarity-weighted sum of its neighbours at or above `threshold`.

    Neighbourhood blending (Shopee winners): rows are L2-normalised again afterwards. The weights form a
    sparse (n, n) matrix with at most k entries a row, so no dense n x n matrix is built; `embeddings` may be
    dense or scipy-sparse (TF-IDF).
    """
    import scipy.sparse as sp
    from sklearn.preprocessing import normalize

    keep = MatchMasker(similarities, indices, max_matches=indices.shape[1])(threshold)
    rows = np.repeat(np.arange(len(indices)), keep.sum(axis=1))
    weights = sp.csr_matrix(
        (similarities[keep].astype(np.float32), (rows, indices[keep])), shape=(len(indices), embeddings.shape[0])
    )
    blended = weights @ embeddings
    if sp.issparse(blended):
        return normalize(blended.tocsr(), norm="l2", axis=1)
    return normalize(np.asarray(blended, dtype=np.float32), norm="l2", axis=1)
