"""The competitions' metrics as pure, vectorised functions: mean row-wise F1 (match) and MAP@5 (identify).

Match predictions are CSR-like arrays over row indices: row i predicts `indices[indptr[i]:indptr[i + 1]]`,
and its true set is every row with the same label, itself included. A predicted row listed twice counts
once: by default each row's predictions are sorted and deduplicated first (rows padded into a matrix and
sorted along it, or one stable sort of row-major keys when row lengths vary too much for padding); callers
whose rows are unique by construction (kNN output, as in tuning) pass `assume_unique=True` to skip that step.
Rows are processed in blocks of about BLOCK_PREDICTIONS predictions so that the temporaries stay in cache:
memory traffic, not arithmetic, bounds this metric.

Identify predictions are a 2-D array (n, <= 5) of ids; rows with fewer than five are padded with a value that
never equals a true id (`PAD_ID` for strings, `PAD_CODE` for integer codes).
"""

from __future__ import annotations

import numpy as np

TOP_K = 5
PAD_ID = ""
PAD_CODE = -1
BLOCK_PREDICTIONS = 1 << 17


def metric_name(task: str) -> str:
    """Return the name of a task's competition metric, for plots and reports."""
    return {"match": "mean row F1", "identify": "MAP@5"}[task]


def row_f1(labels: np.ndarray, indptr: np.ndarray, indices: np.ndarray, *, assume_unique: bool = False) -> np.ndarray:
    """Return each row's F1 = 2|T ∩ P| / (|T| + |P|), T = the rows sharing its label, P = its predictions."""
    labels = np.asarray(labels)
    indptr, indices = _check_rows(labels, indptr, indices)
    codes = _compact_codes(labels)
    predicted = np.diff(indptr)
    hits = np.empty(len(labels), dtype=np.int64)
    for start, stop in _row_blocks(indptr):
        block_indices, block_predicted = indices[indptr[start] : indptr[stop]], predicted[start:stop]
        if not assume_unique:
            block_indices, block_predicted = _dedupe(block_indices, block_predicted, n_columns=len(labels))
            predicted[start:stop] = block_predicted
        same_label = codes[block_indices] == np.repeat(codes[start:stop], block_predicted)
        hits_before = np.zeros(len(same_label) + 1, dtype=np.int64)
        np.cumsum(same_label, out=hits_before[1:])
        hits[start:stop] = np.diff(hits_before[np.concatenate([[0], np.cumsum(block_predicted)])])
    return 2.0 * hits / (label_sizes(labels) + predicted)


def mean_row_f1(labels: np.ndarray, indptr: np.ndarray, indices: np.ndarray, *, assume_unique: bool = False) -> float:
    """Return the mean over rows of `row_f1`: the Shopee metric."""
    return float(row_f1(labels, indptr, indices, assume_unique=assume_unique).mean())


def label_sizes(labels: np.ndarray) -> np.ndarray:
    """Return, for each row, how many rows share its label (itself included)."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "iu" and len(labels) and labels.min() >= 0 and labels.max() <= 2 * len(labels):
        return np.bincount(labels)[labels]
    _, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return counts[codes.reshape(-1)]


def dedupe_rows(indptr: np.ndarray, indices: np.ndarray, *, n_columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (indptr, indices) with each row's indices sorted and listed once."""
    indptr = np.asarray(indptr, dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) and (indices.min() < 0 or indices.max() >= n_columns):
        raise ValueError(f"indices must be in [0, n_columns={n_columns}), got {indices.min()}..{indices.max()}")
    indices, lengths = _dedupe(indices, np.diff(indptr), n_columns=n_columns)
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), indices


def _dedupe(indices: np.ndarray, lengths: np.ndarray, *, n_columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (indices, lengths) of consecutive rows, each row's indices sorted and listed once."""
    width = int(lengths.max(initial=0))
    if len(lengths) * width <= 2 * len(indices) + 1024:
        # Rows of similar lengths: pad them into a matrix and sort each row, much faster than one long sort.
        padded = np.full((len(lengths), width), n_columns, dtype=np.int64)
        padded[np.arange(width) < lengths[:, None]] = indices
        padded.sort(axis=1)
        first = padded < n_columns
        first[:, 1:] &= padded[:, 1:] != padded[:, :-1]
        return padded[first], np.count_nonzero(first, axis=1)
    keys = np.repeat(np.arange(len(lengths), dtype=np.int64) * max(n_columns, 1), lengths) + indices
    keys.sort(kind="stable")  # rows arrive in order: timsort merges short runs
    first = np.ones(len(keys), dtype=bool)
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    rows, columns = np.divmod(keys[first], max(n_columns, 1))
    return columns, np.bincount(rows, minlength=len(lengths))


def _row_blocks(indptr: np.ndarray) -> list[tuple[int, int]]:
    """Return consecutive (start, stop) row ranges of about BLOCK_PREDICTIONS predictions each."""
    cuts = np.searchsorted(indptr, np.arange(0, indptr[-1], BLOCK_PREDICTIONS), side="right") - 1
    bounds = np.unique(np.concatenate([cuts, [0, len(indptr) - 1]]))
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))


def _compact_codes(labels: np.ndarray) -> np.ndarray:
    """Return `labels` as int32 when they fit (cheaper gathers), else unchanged."""
    int32 = np.iinfo(np.int32)
    fits = len(labels) and labels.dtype.kind in "iu" and int32.min <= labels.min() and labels.max() <= int32.max
    return labels.astype(np.int32) if fits and labels.dtype.itemsize > 4 else labels


def average_precision_at_5(truth: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Return each row's 1/rank of the first occurrence of its true id in the top 5, or 0 when absent."""
    truth = np.asarray(truth)
    predictions = np.asarray(predictions)
    if truth.ndim != 1:
        raise ValueError(f"truth must be 1-D, got shape {truth.shape}")
    if predictions.ndim != 2 or predictions.shape[0] != len(truth):
        raise ValueError(f"predictions must have shape ({len(truth)}, <= {TOP_K}), got {predictions.shape}")
    if predictions.shape[1] > TOP_K:
        raise ValueError(f"predictions must have at most {TOP_K} columns, got {predictions.shape[1]}")
    precision = np.zeros(len(truth))
    # Last rank first, so that an id listed twice scores at its first (best) rank; a column at a time is ~10x
    # faster than argmax over a (n, 5) boolean array.
    for rank in range(predictions.shape[1], 0, -1):
        np.copyto(precision, 1.0 / rank, where=predictions[:, rank - 1] == truth)
    return precision


def encode_ids(truth: np.ndarray, predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (truth, predictions) as integer codes of one shared code space, PAD_ID becoming PAD_CODE.

    Comparing Python strings costs about as much in numpy as in a Python loop; encode once, then score the
    codes as often as needed (MAP@5 on codes is tens of times faster than on strings).
    """
    import pandas as pd

    truth = np.asarray(truth, dtype=object)
    predictions = np.asarray(predictions, dtype=object)
    codes, _ = pd.factorize(np.concatenate([truth, predictions.ravel()]))
    prediction_codes = codes[len(truth) :].reshape(predictions.shape)
    prediction_codes[predictions == PAD_ID] = PAD_CODE
    return codes[: len(truth)], prediction_codes


def map_at_5(truth: np.ndarray, predictions: np.ndarray) -> float:
    """Return MAP@5 with one true id per row: the mean of `average_precision_at_5`."""
    if len(truth) == 0:
        raise ValueError("map_at_5 needs at least one row, got 0")
    return float(average_precision_at_5(truth, predictions).mean())


def _check_rows(labels: np.ndarray, indptr: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    n_rows = len(labels)
    if n_rows == 0:
        raise ValueError("row_f1 needs at least one row, got 0")
    indptr = np.asarray(indptr)
    indices = np.asarray(indices)
    if indptr.shape != (n_rows + 1,):
        raise ValueError(f"indptr must have shape ({n_rows + 1},) for {n_rows} labels, got {indptr.shape}")
    if indptr[0] != 0 or indptr[-1] != len(indices) or (np.diff(indptr) < 0).any():
        raise ValueError("indptr must start at 0, never decrease, and end at len(indices)")
    if len(indices) == 0:
        return indptr, indices.astype(np.int64)
    if indices.dtype.kind not in "iu":
        raise ValueError(f"indices must be integers, got dtype {indices.dtype}")
    if indices.min() < 0 or indices.max() >= n_rows:
        raise ValueError(f"indices must be row numbers in [0, {n_rows}), got {indices.min()}..{indices.max()}")
    return indptr, indices
