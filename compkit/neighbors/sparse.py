"""Exact cosine top-k between the rows of scipy.sparse matrices (TF-IDF), same contract as the dense search.

Rows must already be L2-normalised (``TfidfVectorizer`` does it by default, else
``sklearn.preprocessing.normalize``). The CPU search takes chunks of query rows, multiplies each chunk by the
transposed reference as a sparse product, densifies that (chunk x nr) product, which the chunk size keeps
under ~128 MB, and takes the top k of every row with the same vectorised top-k as the dense torch search.
A dense product gives the same ranking as the dense search, implicit zeros included.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from compkit.errors import CompkitError, DataError
from compkit.neighbors.base import SearchResult, check_search_args, empty_result
from compkit.neighbors.cuml_knn import cuml_available, cuml_kneighbors, require_cuml

SPARSE_BACKEND_NAMES = ("auto", "scipy", "cuml")
_DENSE_PRODUCT_BUDGET_BYTES = 128 * 2**20
_MAX_CHUNK_ROWS = 4096


def as_float32_csr(matrix, name: str):
    """Return ``matrix`` as a float32 scipy CSR matrix, raising DataError if it is not a sparse 2-D matrix."""
    import scipy.sparse

    if not scipy.sparse.issparse(matrix):
        raise DataError(f"{name} must be a scipy.sparse matrix (for dense arrays use get_backend), "
                        f"got {type(matrix).__name__}")
    return scipy.sparse.csr_matrix(matrix, dtype=np.float32)


class SparseKNNBackend(ABC):
    """An exact cosine top-k search over sparse rows; call it (or ``.search``) like a dense KNNBackend."""

    name: str = "base"

    def search(self, query, reference, k: int, *, exclude_self: bool = False) -> SearchResult:
        """Return (similarities, indices) of the k most similar reference rows for every query row."""
        query = as_float32_csr(query, "query")
        reference = as_float32_csr(reference, "reference")
        k = check_search_args(query.shape[0], reference.shape[0], query.shape[1], reference.shape[1], k,
                              exclude_self)
        if k == 0 or query.shape[0] == 0:
            return empty_result(query.shape[0], k)
        similarities, indices = self._search(query, reference, k, exclude_self)
        return np.ascontiguousarray(similarities, dtype=np.float32), np.ascontiguousarray(indices, dtype=np.int64)

    __call__ = search

    @abstractmethod
    def _search(self, query, reference, k: int, exclude_self: bool) -> SearchResult:
        """Search validated float32 CSR inputs for exactly k (<= available) neighbours per row."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ScipySparseKNN(SparseKNNBackend):
    """Exact sparse cosine top-k on CPU: chunked scipy sparse products, then a vectorised top-k per chunk."""

    name = "scipy"

    def __init__(self, *, chunk_size: int | None = None):
        self.chunk_size = chunk_size

    def _search(self, query, reference, k: int, exclude_self: bool) -> SearchResult:
        import torch

        from compkit.neighbors.torch_knn import row_topk

        n_query, n_reference = query.shape[0], reference.shape[0]
        reference_t = reference.T.tocsr()  # (dim x nr): CSR @ CSR is scipy's fast product
        chunk_rows = self.chunk_size or max(1, min(_MAX_CHUNK_ROWS, _DENSE_PRODUCT_BUDGET_BYTES // (4 * n_reference)))
        similarities = np.empty((n_query, k), dtype=np.float32)
        indices = np.empty((n_query, k), dtype=np.int64)
        for start in range(0, n_query, chunk_rows):
            stop = min(start + chunk_rows, n_query)
            scores = (query[start:stop] @ reference_t).toarray()
            if exclude_self:
                rows = np.arange(stop - start)
                scores[rows, rows + start] = -np.inf
            values, columns = row_topk(torch.from_numpy(scores), k)
            values, order = torch.topk(values, k, dim=1)
            similarities[start:stop] = values.numpy()
            indices[start:stop] = columns.gather(1, order).numpy()
        return similarities, indices


class CumlSparseKNN(SparseKNNBackend):
    """Exact sparse cosine top-k on a CUDA GPU with cuML's brute-force NearestNeighbors (CSR input)."""

    name = "cuml"

    def __init__(self):
        require_cuml()

    def _search(self, query, reference, k: int, exclude_self: bool) -> SearchResult:
        return cuml_kneighbors(query, reference, k, exclude_self)


def get_sparse_backend(name: str = "auto") -> SparseKNNBackend:
    """Return the sparse search called ``name``: "scipy", "cuml", or "auto" (cuML where it can run, else scipy)."""
    if name == "auto":
        return CumlSparseKNN() if cuml_available() else ScipySparseKNN()
    if name == "scipy":
        return ScipySparseKNN()
    if name == "cuml":
        return CumlSparseKNN()
    raise CompkitError(f"unknown sparse kNN backend {name!r}: choose one of {', '.join(SPARSE_BACKEND_NAMES)}")
