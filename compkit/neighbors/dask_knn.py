"""Exact cosine top-k sharded over a dask.distributed cluster (optional: compkit[dask]).

The search is cut into tasks of (query range, reference shard): each task runs the blocked search of
``compkit.neighbors.blocked`` on its ranges and returns its rows' best m candidates; one task per query range
then merges its shards' candidates (ties: the lower reference index) and, for bf16 scores, re-ranks them in
float32. Ranges start at multiples of the single-process plan's block sizes, and every block is scored by
the same single-threaded kernel, so the result equals ``TorchKNN``'s with the same ``memory`` and precision,
indices and similarities, bit for bit (tested).

Inputs reach the workers as follows: a ``numpy.memmap`` by its file (path, offset, dtype, shape), which each
worker maps itself (shared storage, at the same path or mapped by COMPKIT_PATH_MAP; or the local disk of a
LocalCluster); any other array is scattered to the workers once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compkit.cluster import client_for, on_this_machine
from compkit.neighbors.base import KNNBackend, SearchResult
from compkit.neighbors.blocked import block_candidates, finish, merge_candidates
from compkit.neighbors.memory import DEFAULT_MEMORY, BlockPlan
from compkit.neighbors.torch_knn import Precision, TorchKNN, candidate_count


@dataclass(frozen=True)
class MappedRows:
    """A float array in a file that a worker memory-maps itself."""

    path: str
    offset: int
    dtype: str
    shape: tuple[int, int]

    def open(self) -> np.ndarray:
        return np.memmap(on_this_machine(self.path), dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape)


class DaskKNN(KNNBackend):
    """Exact cosine top-k as (query range x reference shard) tasks on a dask.distributed cluster.

    ``scheduler``: a scheduler address or a ``Client``. ``query_tasks`` / ``reference_shards``: how many
    ranges each side is cut into (default: about two query ranges per worker thread; one shard per reference
    block of the plan, at most ``query_tasks``). ``memory`` and ``precision`` mean what they mean for
    ``TorchKNN``, whose plan (for the calling process's thread count) sets the block boundaries.
    """

    name = "dask"
    keeps_dtype = True

    def __init__(self, scheduler, *, memory: str | int = DEFAULT_MEMORY, precision: Precision = "auto",
                 query_tasks: int | None = None, reference_shards: int | None = None):
        self.client = client_for(scheduler)
        self.engine = TorchKNN("cpu", precision=precision, memory=memory)
        self.query_tasks, self.reference_shards = query_tasks, reference_shards

    def __repr__(self) -> str:
        return f"DaskKNN({self.client.scheduler.address!r}, memory={self.engine.memory})"

    def _search(self, query: np.ndarray, reference: np.ndarray, k: int, exclude_self: bool) -> SearchResult:
        precision = self.engine.resolve_precision(len(query), len(reference), query.shape[1])
        bf16 = precision == "bf16"
        m = candidate_count(k, len(reference) - int(exclude_self)) if bf16 else k
        plan = self.engine.plan(len(query), len(reference), query.shape[1], m, precision)
        query_source, reference_source = self._send(query), self._send(reference)
        threads = sum(self.client.nthreads().values()) or 1
        query_ranges = _ranges(len(query), plan.query_rows, self.query_tasks or 2 * threads)
        shards = _ranges(len(reference), plan.reference_rows, self.reference_shards or len(query_ranges))
        results = []
        for q_range in query_ranges:
            parts = [self.client.submit(_shard_task, query_source, reference_source, q_range, r_range, m, plan,
                                        bf16, exclude_self, pure=False)
                     for r_range in shards]
            results.append(self.client.submit(_finish_task, query_source, reference_source, q_range, k, m,
                                              bf16, plan, *parts, pure=False))
        gathered = self.client.gather(results)
        return (np.concatenate([similarities for similarities, _ in gathered]),
                np.concatenate([indices for _, indices in gathered]))

    def _send(self, array: np.ndarray):
        if isinstance(array, np.memmap) and array.filename and array.flags.c_contiguous:
            base = array
            while isinstance(base.base, np.memmap):
                base = base.base
            offset = getattr(array, "offset", 0) + (array.__array_interface__["data"][0]
                                                    - base.__array_interface__["data"][0])
            return MappedRows(str(array.filename), int(offset), array.dtype.str, tuple(array.shape))
        return self.client.scatter(np.ascontiguousarray(array), broadcast=True)


def _ranges(n_rows: int, block_rows: int, pieces: int) -> list[tuple[int, int]]:
    """Return about ``pieces`` consecutive ranges covering n_rows, each a whole number of blocks."""
    n_blocks = -(-n_rows // block_rows)
    per_piece = -(-n_blocks // max(1, min(pieces, n_blocks))) * block_rows
    return [(start, min(start + per_piece, n_rows)) for start in range(0, n_rows, per_piece)]


def _open(source) -> np.ndarray:
    return source.open() if isinstance(source, MappedRows) else source


def _shard_task(query_source, reference_source, query_range, reference_range, m: int, plan: BlockPlan,
                bf16: bool, exclude_self: bool):
    return block_candidates(_open(query_source), _open(reference_source), m, plan=plan, bf16=bf16, device="cpu",
                            query_range=query_range, reference_range=reference_range, exclude_self=exclude_self)


def _finish_task(query_source, reference_source, query_range, k: int, m: int, bf16: bool, plan: BlockPlan,
                 *parts):
    scores, columns = merge_candidates(parts, m)
    return finish(_open(query_source), _open(reference_source), scores, columns, k, bf16=bf16, device="cpu",
                  query_start=query_range[0], rerank_step_bytes=plan.rerank_step_bytes)
