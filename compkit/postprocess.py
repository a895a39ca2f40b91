"""Neighbours -> predictions: match lists by threshold, identify top-5 with new_individual. Vectorised.

Neighbour lists are dense (n, k) arrays sorted by descending similarity, as every kNN backend returns.
"""

from __future__ import annotations

import numpy as np

from compkit.metrics import average_precision_at_5, row_f1

__all__ = ["average_precision_at_5", "match_f1", "match_mask", "top_labels", "insert_new_individual"]

NO_LABEL = -1


def match_mask(
    similarities: np.ndarray,
    indices: np.ndarray,
    threshold: float,
    *,
    max_matches: int = 50,
    min2_threshold: float | None = None,
) -> np.ndarray:
    """Return a boolean (n, k) mask of the neighbours kept as matches (self always kept, at most max_matches).

    With `min2_threshold` ("min2": every product has at least two postings), each row also keeps its nearest
    other posting when that one's similarity reaches the lower `min2_threshold`.
    """
    rows = np.arange(len(indices))[:, None]
    is_self = indices == rows
    keep = (similarities >= threshold) | is_self
    keep &= indices >= 0
    if min2_threshold is not None:
        candidate = ~is_self & (indices >= 0)
        nearest_other = candidate.argmax(axis=1)
        has_other = candidate.any(axis=1)
        row_index = np.arange(len(indices))
        keep[row_index, nearest_other] |= has_other & (similarities[row_index, nearest_other] >= min2_threshold)
    if max_matches and keep.shape[1] > max_matches:
        keep &= np.cumsum(keep, axis=1) <= max_matches
    return keep


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
