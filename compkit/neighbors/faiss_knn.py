"""Exact cosine top-k with faiss's flat inner-product index (an optional dependency: faiss-cpu)."""

from __future__ import annotations

import importlib.util

import numpy as np

from compkit.errors import BackendUnavailable
from compkit.neighbors.base import KNNBackend, SearchResult, drop_self


def faiss_available() -> bool:
    """Return whether the faiss package can be imported."""
    return importlib.util.find_spec("faiss") is not None


class FaissKNN(KNNBackend):
    """Exact cosine top-k with ``faiss.IndexFlatIP`` on CPU (float32 scores, recall 1.0)."""

    name = "faiss"

    def __init__(self):
        if not faiss_available():
            raise BackendUnavailable("faiss is not installed: pip install faiss-cpu")

    def _search(self, query: np.ndarray, reference: np.ndarray, k: int, exclude_self: bool) -> SearchResult:
        import faiss

        index = faiss.IndexFlatIP(reference.shape[1])
        index.add(reference)
        similarities, indices = index.search(query, k + int(exclude_self))
        if exclude_self:
            similarities, indices = drop_self(similarities, indices)
        return similarities, indices

