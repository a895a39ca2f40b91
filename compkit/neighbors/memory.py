"""The memory budget of a dense search, and the block sizes derived from it.

A search never holds an (nq x nr) matrix: it scores one block of query rows against one block of reference
rows at a time and merges each block's top-k into a running top-k. ``plan_blocks`` sizes both blocks so that
everything a search allocates besides its inputs (which may be float16 memory maps, read block by block)
and its (nq x k) results fits in ``memory`` bytes, whatever N is: the query chunk and the reference block
converted to the scoring dtype, the block of scores and its top-k temporaries, the running top-k and its
merge, and the exact re-rank's gather buffers, for each worker thread. A reference whose converted copy fits
in half the budget is converted once and shared by the threads ("resident"); a larger one is converted per
block, which costs little (one conversion per element per query chunk, against 2 x chunk x dim flops).

Block boundaries are fixed multiples of the block sizes from row 0, so a search split into query ranges and
reference shards at those boundaries (``compkit.neighbors.dask_knn``) scores exactly the same blocks as the
single-process search and, with the total order on (similarity desc, index asc), returns the same result.
"""

from __future__ import annotations

from dataclasses import dataclass

from compkit.errors import ConfigError
from compkit.schema import parse_memory

__all__ = ["DEFAULT_MEMORY", "BlockPlan", "parse_memory", "plan_blocks"]

DEFAULT_MEMORY = "2GB"
_MIN_REFERENCE_ROWS = 256
_SAFETY = 1.25  # allocator slack and the small temporaries not counted one by one


@dataclass(frozen=True)
class BlockPlan:
    """Rows per query chunk and per reference block, and whether the reference is converted once."""

    query_rows: int
    reference_rows: int
    resident: bool
    rerank_step_bytes: int = 0  # gathered float32 candidate rows per re-rank step (bf16 searches)


def plan_blocks(n_query: int, n_reference: int, dim: int, n_candidates: int, *, memory: int, workers: int,
                max_query_rows: int, score_bytes: int, rerank_step_bytes: int) -> BlockPlan:
    """Return the block sizes that keep a search's own allocations within ``memory`` bytes.

    ``score_bytes`` is the size of one score (2 for bf16, 4 for fp32); ``n_candidates`` the running top-m.
    """
    rerank_step_bytes = min(rerank_step_bytes, memory // (8 * workers))
    converted_row = dim * (4 + score_bytes)  # float32 conversion, then the scoring copy
    resident = n_reference * converted_row <= memory // 2
    per_worker = (memory - (n_reference * converted_row if resident else 0)) / workers / _SAFETY
    # A reference converted per block is converted once per query chunk: taller chunks amortise that.
    query_rows = max(1, min(max_query_rows * (1 if resident else 4), n_query))
    while True:
        fixed = (query_rows * dim * (4 + score_bytes)  # the query chunk, float32 and scoring dtype
                 + query_rows * 2 * n_candidates * 12 * 2  # running top-m, its merge and sort
                 + 3 * rerank_step_bytes)  # gathered rows (and their float16 read), products
        # the scores, their group maxima, and for bf16 the matmul's float32 accumulator (oneDNN on CPU)
        per_score = score_bytes * (1 + 1 / 16) + (4 if score_bytes == 2 else 0)
        per_column = query_rows * per_score + (0 if resident else converted_row)
        reference_rows = int((per_worker - fixed) // per_column)
        if reference_rows >= min(_MIN_REFERENCE_ROWS, n_reference) or query_rows == 1:
            break
        query_rows = max(1, query_rows // 2)
    if reference_rows < 1:
        raise ConfigError(f"memory={memory} bytes is too small for a search of dim {dim} with k={n_candidates} "
                          f"on {workers} threads: raise [neighbors] memory")
    return BlockPlan(query_rows, max(1, min(reference_rows, n_reference)), resident, rerank_step_bytes)
