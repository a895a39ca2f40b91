"""The kNN search contract shared by every backend, and the helpers around it.

A search is any callable ``search(query, reference, k, *, exclude_self=False) -> (similarities, indices)``:

- ``query`` (nq, d) and ``reference`` (nr, d) are float32 (or float16: memory-mapped embeddings) rows that
  are already L2-normalised (see
  ``l2_normalize``), so the inner product is the cosine similarity;
- ``similarities`` is float32 (nq, k) and ``indices`` int64 (nq, k), each row sorted by descending similarity;
- ``exclude_self=True`` says that query row i *is* reference row i (a set searched against itself) and drops
  reference i from row i's neighbours, whatever its similarity;
- when fewer than k references are available (k > nr, or k > nr - 1 with ``exclude_self``), every row holds
  all of them and the result has that many columns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from compkit.errors import DataError

SearchResult = tuple[np.ndarray, np.ndarray]


def l2_normalize(vectors: np.ndarray, *, eps: float = 1e-12) -> np.ndarray:
    """Return float32 copies of the rows of ``vectors`` scaled to unit L2 norm (all-zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, eps)


def as_float32_rows(array: np.ndarray, name: str) -> np.ndarray:
    """Return ``array`` as a C-contiguous float32 2-D array, copying only when needed."""
    array = np.asarray(array)
    if array.ndim != 2:
        raise DataError(f"{name} must be a 2-D array of shape (rows, dim), got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float32)


def as_float_rows(array: np.ndarray, name: str) -> np.ndarray:
    """Return ``array`` as a 2-D float16 or float32 array, never copying a float16 or float32 one (memory maps)."""
    if not isinstance(array, np.ndarray):
        array = np.asarray(array)
    if array.ndim != 2:
        raise DataError(f"{name} must be a 2-D array of shape (rows, dim), got shape {array.shape}")
    if array.dtype in (np.float16, np.float32):
        return array
    return np.ascontiguousarray(array, dtype=np.float32)


def check_search_args(n_query: int, n_reference: int, query_dim: int, reference_dim: int, k: int,
                      exclude_self: bool) -> int:
    """Return the number of neighbour columns a search returns, after validating its arguments."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise DataError(f"k must be a positive integer, got k={k!r}")
    if query_dim != reference_dim:
        raise DataError(f"query and reference must have the same dimension, got {query_dim} and {reference_dim}")
    if n_reference == 0:
        raise DataError("reference is empty: there is nothing to search")
    if exclude_self and n_query != n_reference:
        raise DataError(
            f"exclude_self=True needs the query rows to be the reference rows, got {n_query} query rows "
            f"and {n_reference} reference rows"
        )
    return min(int(k), n_reference - int(exclude_self))


def empty_result(n_query: int, k: int) -> SearchResult:
    """Return a result with ``n_query`` rows and ``k`` columns and no content."""
    return np.empty((n_query, k), dtype=np.float32), np.empty((n_query, k), dtype=np.int64)


def drop_self(similarities: np.ndarray, indices: np.ndarray) -> SearchResult:
    """Return the results without row i's own index i (or without its last column where i is absent)."""
    is_self = indices == np.arange(len(indices))[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    keep = ~is_self
    n_rows, n_columns = indices.shape
    return similarities[keep].reshape(n_rows, n_columns - 1), indices[keep].reshape(n_rows, n_columns - 1)


class KNNBackend(ABC):
    """An exact cosine top-k search; call it (or ``.search``) with the contract in this module's docstring."""

    name: str = "base"
    keeps_dtype: bool = False  # True: float16 rows (memory maps) reach _search unconverted, read block by block

    def search(self, query: np.ndarray, reference: np.ndarray, k: int, *, exclude_self: bool = False) -> SearchResult:
        """Return (similarities, indices) of the k most similar reference rows for every query row."""
        rows = as_float_rows if self.keeps_dtype else as_float32_rows
        query, reference = rows(query, "query"), rows(reference, "reference")
        k = check_search_args(len(query), len(reference), query.shape[1], reference.shape[1], k, exclude_self)
        if k == 0 or len(query) == 0:
            return empty_result(len(query), k)
        similarities, indices = self._search(query, reference, k, exclude_self)
        return np.ascontiguousarray(similarities, dtype=np.float32), np.ascontiguousarray(indices, dtype=np.int64)

    __call__ = search

    @abstractmethod
    def _search(self, query: np.ndarray, reference: np.ndarray, k: int, exclude_self: bool) -> SearchResult:
        """Search validated float32 inputs for exactly k (<= available) neighbours per row."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
