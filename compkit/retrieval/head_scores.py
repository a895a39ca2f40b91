"""identify: the margin head's own score of each retrieved individual, and its fusion with the kNN score.

A fold model trained with ArcFace (or sub-center ArcFace) keeps one centre per individual (k sub-centres):
the head's score of an individual for a query is the cosine to its nearest sub-centre. The kNN score is the
best cosine to that individual's gallery images. The Happywhale winners ranked by `r * kNN + (1 - r) * head`
(r = 0.5, later 0.8); compkit tunes r (`knn_weight`) on OOF. Head scores are computed only for the
individuals the kNN search retrieved, one (query, neighbour) pair at a time: never a queries x classes matrix.
"""

from __future__ import annotations

import numpy as np

CHUNK_ROWS = 256
KNN_WEIGHT = "knn_weight"  # the tuned parameter r
KNN_WEIGHT_STEP = 0.05


def centre_rows(centre_labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Return, for each label code (the position in `classes`), its row in the centres, or -1 when it has none."""
    import pandas as pd

    return pd.Index(np.asarray(centre_labels, dtype=str)).get_indexer(np.asarray(classes, dtype=str))


def head_similarities(
    queries: np.ndarray, neighbour_codes: np.ndarray, centres: np.ndarray, row_of_code: np.ndarray
) -> np.ndarray:
    """Return (n, k): each query's cosine to the nearest sub-centre of each neighbour's individual.

    `queries` (n, d) are unit embeddings, `neighbour_codes` (n, k) label codes (-1 for padding), `centres`
    (classes, sub-centres, d) unit rows, `row_of_code` from `centre_rows`. NaN where a neighbour's
    individual has no centre (padding, or a label the fold's head never trained on).
    """
    queries = np.asarray(queries, dtype=np.float32)
    centres = np.asarray(centres, dtype=np.float32)
    out = np.full(neighbour_codes.shape, np.nan, dtype=np.float32)
    for start in range(0, len(queries), CHUNK_ROWS):
        codes = neighbour_codes[start:start + CHUNK_ROWS]
        rows = np.where(codes >= 0, row_of_code[np.clip(codes, 0, None)], -1)
        vectors = centres[np.clip(rows, 0, None)]  # (chunk, k, sub-centres, d)
        cosines = np.einsum("nd,nksd->nks", queries[start:start + CHUNK_ROWS], vectors).max(axis=2)
        out[start:start + CHUNK_ROWS] = np.where(rows >= 0, cosines, np.nan)
    return out


def fused_lists(
    similarities: np.ndarray, indices: np.ndarray, head: np.ndarray, knn_weight: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return neighbour lists re-ranked by `knn_weight * kNN + (1 - knn_weight) * head`, sorted descending.

    A neighbour without a head score keeps its kNN score; padding (-inf) stays last.
    """
    finite = np.isfinite(similarities)
    knn = np.where(finite, similarities, 0.0)
    fused = np.where(np.isnan(head), knn, knn_weight * knn + (1.0 - knn_weight) * np.nan_to_num(head))
    fused = np.where(finite, fused, -np.inf).astype(np.float32)
    order = np.argsort(-fused, axis=1, kind="stable")
    return np.take_along_axis(fused, order, axis=1), np.take_along_axis(indices, order, axis=1)
