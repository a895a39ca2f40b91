"""Approximate cosine top-k with faiss's inverted-file index (IndexIVFFlat), for galleries too large for exact.

Never the default: ``[neighbors] index = "ivf"`` asks for it. Every search measures its own recall@k against
the exact search on a sample of its query rows (``recall_sample``, seeded) and keeps it in ``last_recall``;
a recall below ``warn_below`` warns in one line. The reference is clustered into ``lists`` cells (default
4 sqrt(n), as faiss's guidelines suggest) by k-means on at most 256 rows per cell, and each query scans its
``probes`` nearest cells. The index holds a float32 copy of the reference (faiss's flat codes), added one
block at a time from a float16 memory map. A query whose probed cells hold fewer than k rows gets index -1
(similarity about -3.4e38, faiss's filler) in the missing places.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from compkit.errors import BackendUnavailable, ConfigError
from compkit.neighbors.base import KNNBackend, SearchResult
from compkit.neighbors.faiss_knn import faiss_available
from compkit.neighbors.memory import DEFAULT_MEMORY
from compkit.neighbors.torch_knn import TorchKNN

_ADD_ROWS = 65536
_TRAIN_ROWS_PER_LIST = 256


@dataclass(frozen=True)
class RecallReport:
    """Recall@k of an approximate search against the exact one, on ``sample`` query rows."""

    recall: float
    sample: int
    k: int

    def __str__(self) -> str:
        return f"approximate kNN (faiss IVF): recall@{self.k} {self.recall:.4f} against exact on {self.sample} queries"


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Return the mean fraction of each row's true neighbours (``truth``) that ``found`` holds."""
    hits = sum(len(np.intersect1d(row, true_row)) for row, true_row in zip(found, truth, strict=True))
    return hits / max(1, truth.size)


class FaissIVFKNN(KNNBackend):
    """Approximate cosine top-k with ``faiss.IndexIVFFlat`` (inner product), recall reported on a sample."""

    name = "faiss-ivf"
    keeps_dtype = True

    def __init__(self, *, lists: int = 0, probes: int = 16, recall_sample: int = 1000, seed: int = 0,
                 memory: str | int = DEFAULT_MEMORY, warn_below: float = 0.95):
        if not faiss_available():
            raise BackendUnavailable("faiss is not installed: pip install 'compkit[faiss]'")
        if lists < 0 or probes < 1 or recall_sample < 0:
            raise ConfigError(f"ivf needs lists >= 0 (0: automatic), probes >= 1 and recall_sample >= 0, "
                              f"got lists={lists}, probes={probes}, recall_sample={recall_sample}")
        self.lists, self.probes, self.recall_sample, self.seed = lists, probes, recall_sample, seed
        self.memory, self.warn_below = memory, warn_below
        self.last_recall: RecallReport | None = None

    def __repr__(self) -> str:
        return f"FaissIVFKNN(lists={self.lists or 'auto'}, probes={self.probes})"

    def _search(self, query: np.ndarray, reference: np.ndarray, k: int, exclude_self: bool) -> SearchResult:
        index = self.build_index(reference)
        similarities = np.empty((len(query), k), dtype=np.float32)
        indices = np.empty((len(query), k), dtype=np.int64)
        for start in range(0, len(query), _ADD_ROWS):
            rows = np.ascontiguousarray(query[start:start + _ADD_ROWS], dtype=np.float32)
            found_similarities, found = index.search(rows, k + int(exclude_self))
            if exclude_self:
                found_similarities, found = _drop_own(found_similarities, found, np.arange(start, start + len(rows)))
            similarities[start:start + len(rows)], indices[start:start + len(rows)] = found_similarities, found
        self.last_recall = self.measure_recall(query, reference, indices, k, exclude_self)
        if self.last_recall is not None and self.last_recall.recall < self.warn_below:
            warnings.warn(f"{self.last_recall}: raise [neighbors] ivf_probes or use index = \"exact\"",
                          stacklevel=3)
        return similarities, indices

    def build_index(self, reference: np.ndarray):
        """Return a trained IndexIVFFlat (inner product) holding every reference row."""
        import faiss

        n_rows, dim = reference.shape
        lists = max(1, min(self.lists or int(4 * math.sqrt(n_rows)), n_rows // 4 or 1))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(self.seed)
        n_train = min(n_rows, lists * _TRAIN_ROWS_PER_LIST)
        train_rows = np.sort(rng.choice(n_rows, n_train, replace=False))
        index.cp.seed = self.seed
        index.train(np.ascontiguousarray(reference[train_rows], dtype=np.float32))
        for start in range(0, n_rows, _ADD_ROWS):
            index.add(np.ascontiguousarray(reference[start:start + _ADD_ROWS], dtype=np.float32))
        index.nprobe = min(self.probes, lists)
        return index

    def measure_recall(self, query, reference, indices: np.ndarray, k: int, exclude_self: bool):
        """Return the recall@k of ``indices`` against the exact search on a seeded sample of query rows."""
        if self.recall_sample == 0:
            return None
        rng = np.random.default_rng(self.seed)
        sample = np.sort(rng.choice(len(query), min(self.recall_sample, len(query)), replace=False))
        exact = TorchKNN(precision="fp32", memory=self.memory)
        rows = np.ascontiguousarray(query[sample], dtype=np.float32)
        truth_similarities, truth = exact(rows, reference, k + int(exclude_self))
        if exclude_self:
            _, truth = _drop_own(truth_similarities, truth, sample)
        return RecallReport(recall_at_k(indices[sample], truth), len(sample), k)


def _drop_own(similarities: np.ndarray, indices: np.ndarray, own_rows: np.ndarray) -> SearchResult:
    """Return the results without row i's own reference row ``own_rows[i]`` (or without its last column)."""
    is_self = indices == own_rows[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    shape = (len(indices), indices.shape[1] - 1)
    return similarities[~is_self].reshape(shape), indices[~is_self].reshape(shape)
