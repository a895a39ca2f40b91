"""Exact cosine top-k with torch: chunked matmul, bf16 candidate scoring, exact fp32 re-rank.

How a search runs, one chunk of query rows at a time (so no nq x nr matrix ever exists):

1. score the chunk against the reference (in column blocks if the reference is huge) with one matmul, in
   bfloat16 when ``precision`` resolves to "bf16", else in float32;
2. keep the top ``m`` columns of every row: ``m = k`` in fp32, ``m = k + margin`` candidates in bf16, whose
   rounding (about 1e-3 on a cosine) may swap neighbours near the k-th;
3. in bf16, recompute the candidates' similarities exactly in float32 (gathered dot products), then keep the
   top k of those. The returned similarities are therefore always float32 inner products.

Top-k of a score row is done in two stages: the maximum of each of ``width / 16`` strided groups of 16
columns (a vectorised, memory-bound pass), then ``torch.topk`` over the 16 columns of each of the best m
groups. The m best groups hold the m best columns (ties aside). On a 512 x 70,000 bf16 chunk this takes
15 ms where ``torch.topk`` on the full rows takes 27 ms and ``np.argpartition`` (fp32) about 250 ms.
"""

from __future__ import annotations

import functools
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np

from compkit.errors import BackendUnavailable, ConfigError
from compkit.neighbors.base import KNNBackend, SearchResult

Precision = Literal["auto", "fp32", "bf16"]

_SCORE_BUDGET_BYTES = {"cpu": 256 * 2**20, "cuda": 2 * 2**30}  # one chunk's scores; bounds peak memory
_DEFAULT_CHUNK_ROWS = {"cpu": 512, "cuda": 8192}
_RERANK_STEP_BYTES = {"cpu": 16 * 2**20, "cuda": 256 * 2**20}  # gathered candidates per step; ~L3 on CPU
_GROUP_SIZE = 16
_SMALL_SEARCH_FLOPS = 4e10  # below this (~0.3 s of fp32 on 2 cores) bf16 does not pay for its re-rank
_BF16_MIN_SPEEDUP = 1.5  # bf16 must beat fp32 by this much to pay for the wider top-k and the re-rank


def candidate_count(k: int, available: int) -> int:
    """Return how many bf16 candidates to re-rank exactly for a top-k: k plus a margin of max(16, k / 4)."""
    return min(available, k + max(16, k // 4))


@functools.cache
def cpu_bf16_speedup() -> float:
    """Return how many times faster a bf16 matmul is than an fp32 one on this CPU (measured once per process).

    CPU flags are a poor guide: torch's ``get_cpu_capability()`` says "AVX512" both on chips with native bf16
    dot products (AVX512_BF16, AMX) and on chips without, and /proc/cpuinfo exists only on Linux. Timing the
    operation we are about to run measures what matters, including the torch build's kernels. The timing is
    single-threaded and in thread CPU time, so another process busy on the cores cannot tip the decision; it
    costs about 0.1 s where bf16 is native (more where it is emulated).
    """
    import torch

    return _single_threaded(_time_bf16_speedup, torch.get_num_threads())


def _time_bf16_speedup() -> float:
    import torch

    generator = torch.Generator().manual_seed(0)
    left = torch.randn(256, 512, generator=generator)
    right = torch.randn(2048, 512, generator=generator)
    pairs = {torch.float32: (left, right), torch.bfloat16: (left.bfloat16(), right.bfloat16())}
    for a, b in pairs.values():  # the first call of each kind sets up its kernels: not part of the timing
        a @ b.T
    best = {dtype: float("inf") for dtype in pairs}
    for _ in range(5):
        for dtype, (a, b) in pairs.items():
            started = time.thread_time()
            a @ b.T
            best[dtype] = min(best[dtype], time.thread_time() - started)
    return best[torch.float32] / max(best[torch.bfloat16], 1e-9)


def cpu_prefers_bf16() -> bool:
    """Return whether bf16 candidate scoring beats fp32 scoring on this CPU (see ``cpu_bf16_speedup``)."""
    return cpu_bf16_speedup() >= _BF16_MIN_SPEEDUP


class TorchKNN(KNNBackend):
    """Exact cosine top-k on CPU or a CUDA GPU with torch.

    ``precision``: "fp32" scores in float32; "bf16" scores candidates in bfloat16 and re-ranks them in float32
    (similarities stay exact; recall@k is ~1.0 rather than exactly 1.0); "auto" picks bf16 for searches that
    are big enough to matter on hardware where bf16 matmul is clearly faster (a CUDA GPU with bf16 support,
    or a CPU where ``cpu_bf16_speedup()`` >= 1.5), else fp32. ``chunk_size`` is the number of query rows
    scored at once (default 512 on CPU, 8192 on CUDA).
    """

    name = "torch"

    def __init__(self, device: str = "cpu", *, chunk_size: int | None = None, precision: Precision = "auto"):
        if device != "cpu" and not device.startswith("cuda"):
            raise ConfigError(f"TorchKNN device must be 'cpu' or 'cuda', got device={device!r}")
        if precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"TorchKNN precision must be 'auto', 'fp32' or 'bf16', got precision={precision!r}")
        if chunk_size is not None and chunk_size < 1:
            raise ConfigError(f"TorchKNN chunk_size must be >= 1, got chunk_size={chunk_size}")
        if device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise BackendUnavailable(f"TorchKNN(device={device!r}) needs a CUDA GPU, and torch sees none")
        self.device = device
        self.chunk_size = chunk_size
        self.precision = precision

    def __repr__(self) -> str:
        return f"TorchKNN(device={self.device!r}, chunk_size={self.chunk_size}, precision={self.precision!r})"

    def resolve_precision(self, n_query: int, n_reference: int, dim: int) -> Literal["fp32", "bf16"]:
        """Return the precision a search of this size runs in ("fp32" or "bf16")."""
        if self.precision != "auto":
            return self.precision
        if 2.0 * n_query * n_reference * dim < _SMALL_SEARCH_FLOPS:
            return "fp32"
        if self.device.startswith("cuda"):
            import torch

            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if cpu_prefers_bf16() else "fp32"

    def _search(self, query: np.ndarray, reference: np.ndarray, k: int, exclude_self: bool) -> SearchResult:
        import torch

        precision = self.resolve_precision(len(query), len(reference), query.shape[1])
        chunk_rows = self.chunk_size or _DEFAULT_CHUNK_ROWS[_device_type(self.device)]
        search_chunk = _ChunkSearch(query, reference, k, exclude_self, precision, self.device, chunk_rows)
        starts = range(0, len(query), chunk_rows)
        threads = torch.get_num_threads()
        workers = 1 if _device_type(self.device) == "cuda" else min(threads, len(starts))
        if workers == 1:
            with torch.inference_mode():
                for start in starts:
                    search_chunk(start)
        else:
            # One single-threaded worker per core, each taking the next chunk when it is done: no barrier
            # between cores inside every op, so a core slowed by another process delays only its own chunk.
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(functools.partial(_single_threaded, search_chunk, threads), starts))
        return search_chunk.similarities, search_chunk.indices


class _ChunkSearch:
    """Searches one chunk of query rows per call, writing into ``similarities`` and ``indices``.

    Each thread that calls it gets its own score and re-rank buffers, reused by every chunk it searches:
    a fresh 70 MB tensor per chunk would cost page faults on CPU.
    """

    def __init__(self, query: np.ndarray, reference: np.ndarray, k: int, exclude_self: bool,
                 precision: Literal["fp32", "bf16"], device: str, chunk_rows: int):
        import torch

        self.query, self.k, self.exclude_self, self.device = query, k, exclude_self, device
        self.chunk_rows = min(chunk_rows, len(query))
        self.bf16 = precision == "bf16"
        available = len(reference) - int(exclude_self)
        self.n_candidates = candidate_count(k, available) if self.bf16 else k
        self.reference_fp32 = _to_tensor(reference, device)
        self.reference_scored = self.reference_fp32.to(torch.bfloat16 if self.bf16 else torch.float32)
        budget = _SCORE_BUDGET_BYTES[_device_type(device)]
        max_columns = max(1, budget // (chunk_rows * self.reference_scored.element_size()))
        n_blocks = -(-len(reference) // max_columns)
        self.block_columns = -(-len(reference) // n_blocks)
        self.similarities = np.empty((len(query), k), dtype=np.float32)
        self.indices = np.empty((len(query), k), dtype=np.int64)
        self._buffers = threading.local()

    def __call__(self, start: int) -> None:
        import torch

        if not hasattr(self._buffers, "scores"):
            self._buffers.scores = torch.empty(self.chunk_rows * self.block_columns,
                                               dtype=self.reference_scored.dtype, device=self.reference_scored.device)
            if self.bf16:
                step_bytes = _RERANK_STEP_BYTES[_device_type(self.device)]
                self._buffers.rerank = _ExactReranker(self.reference_fp32, self.n_candidates, step_bytes)
        stop = min(start + self.chunk_rows, len(self.query))
        query_fp32 = _to_tensor(self.query[start:stop], self.device)
        values, columns = _top_candidates(
            query_fp32.to(self.reference_scored.dtype), self.reference_scored, self.n_candidates,
            self.block_columns, self._buffers.scores, self_offset=start if self.exclude_self else None,
        )
        if self.bf16:
            values = self._buffers.rerank(query_fp32, columns)
        values, order = torch.topk(values, self.k, dim=1)
        self.similarities[start:stop] = values.cpu().numpy()
        self.indices[start:stop] = columns.gather(1, order).cpu().numpy()


def _single_threaded(function, threads_after: int, *args):
    """Call ``function(*args)`` with one intra-op torch thread in this thread, in inference mode.

    OpenMP's thread count is per calling thread, so other threads keep theirs; torch also remembers the last
    count set as the default of threads not yet started, hence ``threads_after``, the caller's own count.
    """
    import torch

    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            return function(*args)
    finally:
        torch.set_num_threads(threads_after)


def _device_type(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


def _to_tensor(array: np.ndarray, device: str):
    """Return a torch view of ``array`` (no copy on CPU), moved to ``device``."""
    import torch

    with warnings.catch_warnings():
        # A read-only array (a memory map) is fine: nothing here writes to it.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array).to(device)


def _top_candidates(query, reference, n_candidates: int, block_columns: int, score_buffer, *,
                    self_offset: int | None):
    """Return (scores, columns) of the ``n_candidates`` best-scored reference rows for every query row."""
    import torch

    best_values = best_columns = None
    for first in range(0, len(reference), block_columns):
        block = reference[first:first + block_columns]
        scores = score_buffer[: len(query) * len(block)].view(len(query), len(block))
        torch.mm(query, block.T, out=scores)
        if self_offset is not None:
            _mask_self(scores, self_offset - first)
        values, columns = row_topk(scores, min(n_candidates, len(block)))
        columns += first
        if best_values is None:
            best_values, best_columns = values, columns
            continue
        merged_values = torch.cat([best_values, values], dim=1)
        merged_columns = torch.cat([best_columns, columns], dim=1)
        best_values, picked = torch.topk(merged_values, min(n_candidates, merged_values.shape[1]), dim=1)
        best_columns = merged_columns.gather(1, picked)
    return best_values, best_columns


def _mask_self(scores, diagonal_offset: int) -> None:
    """Set ``scores[i, i + diagonal_offset]`` to -inf wherever that column exists in the block."""
    import torch

    rows = torch.arange(scores.shape[0], device=scores.device)
    columns = rows + diagonal_offset
    inside = (columns >= 0) & (columns < scores.shape[1])
    scores[rows[inside], columns[inside]] = float("-inf")


def row_topk(scores, m: int):
    """Return (values, columns) of the m largest entries of every row of ``scores``, unsorted."""
    import torch

    n_rows, width = scores.shape
    group_count = width // _GROUP_SIZE  # group j holds columns j, j + group_count, j + 2 * group_count, ...
    if group_count < 4 * m:
        return torch.topk(scores, m, dim=1, sorted=False)
    grouped = scores[:, : group_count * _GROUP_SIZE].view(n_rows, _GROUP_SIZE, group_count)
    _, best_groups = torch.topk(grouped.amax(dim=1), m, dim=1, sorted=False)
    offsets = group_count * torch.arange(_GROUP_SIZE, device=scores.device)
    columns = (best_groups.unsqueeze(2) + offsets).reshape(n_rows, m * _GROUP_SIZE)
    leftover = torch.arange(group_count * _GROUP_SIZE, width, device=scores.device)
    columns = torch.cat([columns, leftover.expand(n_rows, -1)], dim=1)
    values, picked = torch.topk(scores.gather(1, columns), m, dim=1, sorted=False)
    return values, columns.gather(1, picked)


class _ExactReranker:
    """Recomputes candidates' similarities as float32 dot products, a few query rows at a time.

    The step is small enough for the gathered reference rows to stay in cache, and the buffers are reused.
    """

    def __init__(self, reference, n_candidates: int, step_bytes: int):
        import torch

        self.reference = reference
        self.rows_per_step = max(1, step_bytes // (n_candidates * reference.shape[1] * 4))
        shape = (self.rows_per_step, n_candidates, reference.shape[1])
        self.gathered = torch.empty(shape, dtype=torch.float32, device=reference.device)
        self.products = torch.empty(shape, dtype=torch.float32, device=reference.device)

    def __call__(self, query, columns):
        """Return the float32 inner products ``query[i] . reference[columns[i, j]]``."""
        import torch

        result = torch.empty(columns.shape, dtype=torch.float32, device=query.device)
        for start in range(0, len(columns), self.rows_per_step):
            stop = min(start + self.rows_per_step, len(columns))
            gathered = self.gathered[: stop - start]
            flat_columns = columns[start:stop].reshape(-1)
            torch.index_select(self.reference, 0, flat_columns, out=gathered.view(len(flat_columns), -1))
            products = torch.mul(gathered, query[start:stop, None, :], out=self.products[: stop - start])
            torch.sum(products, dim=2, out=result[start:stop])
        return result
