"""Neighbour lists -> identify top-5 lists: the best distinct labels, and where new_individual enters them.

Neighbour lists are dense (n, k) arrays sorted by descending similarity, as every kNN backend returns.
"""

from __future__ import annotations

import numpy as np

NO_LABEL = -1
NEW_INDIVIDUAL = -2  # the label code of "an individual the gallery lacks", in OOF truths and predictions


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


def neighbour_top5(
    similarities: np.ndarray, indices: np.ndarray, label_codes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return each query's top-5 individuals (label codes) by best similarity among its neighbours, and those."""
    neighbour_labels = np.where(indices >= 0, label_codes[np.clip(indices, 0, None)], NO_LABEL)
    return top_labels(similarities, neighbour_labels, 5)
