"""Neighbour lists -> match lists: a threshold (and min2) keeps a prefix of each row; neighbourhood blending.

Neighbour lists are dense (n, k) arrays sorted by descending similarity, as every kNN backend returns.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from compkit.metrics import row_f1


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


def blend_embeddings(embeddings, similarities: np.ndarray, indices: np.ndarray, threshold: float):
    """Return each row replaced by the similarity-weighted sum of its neighbours at or above `threshold`.

    Neighbourhood blending (Shopee winners): rows are L2-normalised again afterwards. The weights form a
    sparse (n, n) matrix with at most k entries a row, so no dense n x n matrix is built; `embeddings` may be
    dense or scipy-sparse (TF-IDF).
    """
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
