"""alpha-QE and alpha-DBA: rows re-embedded from their nearest neighbours before the search that is tuned on.

Database-side augmentation (DBA) replaces every reference row by the weighted mean of itself and its top-k
neighbours, query expansion (QE) every query row, the weights the similarities to the power alpha (the row
itself weighs 1), L2-normalised again (Radenović et al.'s alpha-QE; the Shopee 5th and 10th places, the Google
Landmark 2019 winners). In a match self-search the queries are the set itself, so:

- DBA alone: the rows search the augmented rows;
- QE alone: the expanded rows search the rows as they are;
- both: DBA first, then each row's expansion over its neighbours among the augmented rows, which it searches.

Blending (`blend_stages`, the Shopee winners') is applied first when both are set. Each round's weights are a
sparse (n, n) matrix with k + 1 entries a row, so dense and sparse (TF-IDF) rows work alike and no n x n
matrix is built. k and alpha change the neighbour lists, so they are part of what the cached OOF lists are
made from (`expansion_inputs`), like the blending; they are chosen before the study, not by it: each value
needs a new search of every row (see `benchmarks/postprocess_cost.py`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from compkit.config import NeighborSettings, PostprocessSpace
from compkit.neighbors.base import SearchResult
from compkit.retrieval.search import blend_and_search, search


def expansion_inputs(space: PostprocessSpace) -> dict:
    """Return the expansion settings a neighbour cache is made from ({} when off, so older caches stay fresh)."""
    inputs = {}
    if space.qe_k:
        inputs["qe"] = [space.qe_k, space.qe_alpha]
    if space.dba_k:
        inputs["dba"] = [space.dba_k, space.dba_alpha]
    return inputs


def expanded_rows(matrix, similarities: np.ndarray, indices: np.ndarray, *, k: int, alpha: float, rows=None):
    """Return each row of `matrix` replaced by normalise(row + sum_j max(s_j, 0)^alpha x_j) over its top-k others.

    `similarities`/`indices` list each query row's neighbours among the rows of `rows` (default: `matrix`);
    the query itself is left out of its own neighbours (it enters once, with weight 1).
    """
    from sklearn.preprocessing import normalize

    rows = matrix if rows is None else rows
    n_rows = len(indices)
    own = np.arange(n_rows)[:, None]
    listed = (indices >= 0) & np.isfinite(similarities)
    if rows is matrix:
        listed &= indices != own
    rank = np.cumsum(listed, axis=1)
    keep = listed & (rank <= k)
    weights = np.power(np.clip(similarities[keep], 0.0, None), alpha).astype(np.float32)
    table = sp.csr_matrix((weights, (np.repeat(np.arange(n_rows), keep.sum(axis=1)), indices[keep])),
                          shape=(n_rows, rows.shape[0]))
    expanded = table @ rows
    if sp.issparse(expanded):
        return normalize((sp.csr_matrix(matrix, dtype=np.float32) + expanded).tocsr(), norm="l2", axis=1)
    return normalize(np.asarray(matrix, dtype=np.float32) + np.asarray(expanded, dtype=np.float32), norm="l2",
                     axis=1)


def search_expanded(matrix, depth: int, *, space: PostprocessSpace,
                    backend: str | NeighborSettings) -> SearchResult:
    """Return the set's neighbours within itself after blending, DBA and QE as `space` says (each may be off).

    Expanded rows are dense float32 (or scipy-sparse) in memory, whatever the input's storage.
    """
    matrix, similarities, indices = blend_and_search(matrix, max(depth, space.qe_k + 1, space.dba_k + 1),
                                                     stages=space.blend_stages, threshold=space.blend_threshold,
                                                     backend=backend)
    if not space.qe_k and not space.dba_k:
        return similarities[:, :depth], indices[:, :depth]
    reference = matrix
    if space.dba_k:
        reference = expanded_rows(matrix, similarities, indices, k=space.dba_k, alpha=space.dba_alpha)
    if space.qe_k:
        if space.dba_k:  # the expansion uses the neighbours among the augmented rows
            similarities, indices = search(matrix, reference, space.qe_k + 1, backend=backend)
            matrix = expanded_rows(matrix, similarities, indices, k=space.qe_k, alpha=space.qe_alpha,
                                   rows=reference)
        else:
            matrix = expanded_rows(matrix, similarities, indices, k=space.qe_k, alpha=space.qe_alpha)
    return search(matrix, reference, depth, backend=backend)
