"""Exact cosine top-k with torch: chunked matmul, bf16 candidate scoring, exact fp32 re-rank.

How a search runs, one chunk of query rows at a time (so no nq x nr matrix ever exists):

1. score the chunk against one block of reference rows at a time (block sizes from the ``memory`` budget,
   see ``compkit.neighbors.memory``; the engine is ``compkit.neighbors.blocked``) with one matmul, in
   bfloat16 when ``precision`` resolves to "bf16", else in float32, merging each block's top into a
   running top (ties: the lower reference index, so any blocking gives the same answer);
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
import time
from typing import Literal

import numpy as np

from compkit.errors import BackendUnavailable, ConfigError
from compkit.neighbors.base import KNNBackend, SearchResult
from compkit.neighbors.blocked import block_candidates, finish, single_threaded
from compkit.neighbors.memory import DEFAULT_MEMORY, BlockPlan, parse_memory, plan_blocks

Precision = Literal["auto", "fp32", "bf16"]

_DEFAULT_CHUNK_ROWS = {"cpu": 512, "cuda": 8192}
_RERANK_STEP_BYTES = {"cpu": 16 * 2**20, "cuda": 256 * 2**20}  # gathered candidates per step; ~L3 on CPU
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

    return single_threaded(_time_bf16_speedup, torch.get_num_threads())


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
    scored at most at once (default 512 on CPU, 8192 on CUDA). ``memory`` ("2GB", "512MiB" or bytes) bounds
    what a search allocates besides its inputs and results (see ``compkit.neighbors.memory``); inputs may be
    float16, e.g. memory-mapped embeddings, and are converted one block at a time.
    """

    name = "torch"

    keeps_dtype = True  # float16 rows (memory maps) are read block by block, never copied whole

    def __init__(self, device: str = "cpu", *, chunk_size: int | None = None, precision: Precision = "auto",
                 memory: str | int = DEFAULT_MEMORY):
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
        self.memory = parse_memory(memory)

    def __repr__(self) -> str:
        return (f"TorchKNN(device={self.device!r}, chunk_size={self.chunk_size}, precision={self.precision!r}, "
                f"memory={self.memory})")

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

    def plan(self, n_query: int, n_reference: int, dim: int, n_candidates: int,
             precision: Literal["fp32", "bf16"], *, workers: int | None = None) -> BlockPlan:
        """Return the block sizes a search of this size runs with, from the ``memory`` budget."""
        import torch

        device = _device_type(self.device)
        if workers is None:
            workers = 1 if device == "cuda" else max(1, torch.get_num_threads())
        return plan_blocks(n_query, n_reference, dim, n_candidates, memory=self.memory, workers=workers,
                           max_query_rows=self.chunk_size or _DEFAULT_CHUNK_ROWS[device],
                           score_bytes=2 if precision == "bf16" else 4,
                           rerank_step_bytes=_RERANK_STEP_BYTES[device] if precision == "bf16" else 0)

    def _search(self, query: np.ndarray, reference: np.ndarray, k: int, exclude_self: bool) -> SearchResult:
        precision = self.resolve_precision(len(query), len(reference), query.shape[1])
        bf16 = precision == "bf16"
        n_candidates = candidate_count(k, len(reference) - int(exclude_self)) if bf16 else k
        plan = self.plan(len(query), len(reference), query.shape[1], n_candidates, precision)
        scores, columns = block_candidates(query, reference, n_candidates, plan=plan, bf16=bf16,
                                           device=self.device, exclude_self=exclude_self)
        return finish(query, reference, scores, columns, k, bf16=bf16, device=self.device,
                      rerank_step_bytes=plan.rerank_step_bytes)


def _device_type(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"
