"""Exact cosine top-k on a CUDA GPU with cuML's brute-force NearestNeighbors (optional: compkit[gpu])."""

from __future__ import annotations

import importlib.util

import numpy as np

from compkit.errors import BackendUnavailable
from compkit.neighbors.base import KNNBackend, SearchResult, drop_self

_INSTALL_HINT = "install compkit[gpu] on a machine with a CUDA GPU"
_QUERY_ROWS_PER_CALL = 65536  # bounds cuML's (rows x k) outputs and its tiling workspace


def cuml_available() -> bool:
    """Return whether cuML can be imported and a CUDA GPU is visible to it."""
    return importlib.util.find_spec("cuml") is not None and _cuda_device_count() > 0


def require_cuml() -> None:
    """Raise BackendUnavailable, with the install hint, unless cuML and a CUDA GPU are both there."""
    if importlib.util.find_spec("cuml") is None:
        raise BackendUnavailable(f"cuML is not installed: {_INSTALL_HINT}")
    if _cuda_device_count() == 0:
        raise BackendUnavailable(f"cuML needs a CUDA GPU and none is visible: {_INSTALL_HINT}")


def _cuda_device_count() -> int:
    if importlib.util.find_spec("cupy") is None:  # cuML depends on CuPy: without it there is no usable cuML
        return 0
    import cupy

    try:
        return cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError:  # no driver or no device: the answer, not an error
        return 0


def cuml_kneighbors(query, reference, k: int, exclude_self: bool) -> SearchResult:
    """Return cosine (similarities, indices) from cuML brute force; query/reference may be dense or CSR."""
    from cuml.neighbors import NearestNeighbors

    model = NearestNeighbors(
        n_neighbors=k + int(exclude_self), metric="cosine", algorithm="brute", output_type="numpy"
    )
    model.fit(reference)
    similarities, indices = [], []
    for start in range(0, query.shape[0], _QUERY_ROWS_PER_CALL):
        distances, neighbours = model.kneighbors(query[start:start + _QUERY_ROWS_PER_CALL])
        similarities.append(1.0 - np.asarray(distances, dtype=np.float32))
        indices.append(np.asarray(neighbours, dtype=np.int64))
    similarities, indices = np.concatenate(similarities), np.concatenate(indices)
    if exclude_self:
        similarities, indices = drop_self(similarities, indices)
    return similarities, indices


class CumlKNN(KNNBackend):
    """Exact cosine top-k on a CUDA GPU with cuML (``NearestNeighbors(metric="cosine", algorithm="brute")``).

    Similarities are ``1 - cosine distance`` as cuML computes it, in float32.
    """

    name = "cuml"

    def __init__(self):
        require_cuml()

    def _search(self, query: np.ndarray, reference: np.ndarray, k: int, exclude_self: bool) -> SearchResult:
        return cuml_kneighbors(query, reference, k, exclude_self)
