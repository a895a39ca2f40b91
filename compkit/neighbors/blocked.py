"""The blocked exact search behind TorchKNN and the Dask-sharded search: candidates, merge, exact re-rank.

``block_candidates`` scores query chunks against reference blocks (sizes from ``compkit.neighbors.memory``)
and keeps each row's best m columns; ``merge_candidates`` merges candidate lists of disjoint reference
ranges; ``finish`` turns candidates into the (similarities, indices) result, re-ranking bf16 candidates in
float32 first. Inputs stay in their stored dtype (a float16 memory map is read one block at a time).

Candidate lists are merged under a total order on (score desc, index asc), so the best m of a union does
not depend on how it was split: a search split into shards at block boundaries returns what the single
search returns, indices and similarities, bit for bit. Within a block, fp32 ties at the cut-off also go to
the lower index (so any block plan gives the stable-sort answer); bf16 candidate ties do not (see
``ordered_topk``), and the exact re-rank's ties go to the lower index again.
"""

from __future__ import annotations

import functools
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from compkit.neighbors.memory import BlockPlan

_GROUP_SIZE = 16
_TIE_ROWS_PER_SORT = 64


def block_candidates(query: np.ndarray, reference: np.ndarray, m: int, *, plan: BlockPlan, bf16: bool,
                     device: str, query_range: tuple[int, int] | None = None,
                     reference_range: tuple[int, int] | None = None, exclude_self: bool = False):
    """Return (scores, columns) numpy (n, m') of the best m reference rows of each query row, best first.

    Only query rows ``query_range`` and reference rows ``reference_range`` (global row numbers; starts at
    multiples of the plan's block sizes for results equal to a whole search) are searched; columns are global
    reference rows. ``exclude_self``: query row i never lists reference row i.
    """
    import torch

    q_start, q_stop = query_range or (0, len(query))
    r_start, r_stop = reference_range or (0, len(reference))
    m = min(m, r_stop - r_start)
    scored = torch.bfloat16 if bf16 else torch.float32
    shared = _convert(reference[r_start:r_stop], device, scored) if plan.resident else None
    scores_out = np.empty((q_stop - q_start, m), dtype=np.float32)
    columns_out = np.empty((q_stop - q_start, m), dtype=np.int64)

    buffers = threading.local()  # each thread's score buffer, reused: a fresh one per block costs page faults

    def search_chunk(start: int) -> None:
        stop = min(start + plan.query_rows, q_stop)
        chunk = _convert(query[start:stop], device, scored)
        if not hasattr(buffers, "scores"):
            size = plan.query_rows * min(plan.reference_rows, r_stop - r_start)
            buffers.scores = torch.empty(size, dtype=scored, device=device)
        best = None
        for first in range(r_start, r_stop, plan.reference_rows):
            last = min(first + plan.reference_rows, r_stop)
            block = (shared[first - r_start:last - r_start] if shared is not None
                     else _convert(reference[first:last], device, scored))
            scores = buffers.scores[: len(chunk) * (last - first)].view(len(chunk), last - first)
            torch.mm(chunk, block.T, out=scores)
            if exclude_self:
                _mask_self(scores, start - first)
            values, columns = ordered_topk(scores, min(m, last - first), exact_ties=not bf16)
            found = (values, columns + first)
            best = found if best is None else merge_topk(*best, *found, m)
            del scores, block
        scores_out[start - q_start:stop - q_start] = best[0].float().cpu().numpy()
        columns_out[start - q_start:stop - q_start] = best[1].cpu().numpy()

    starts = range(q_start, q_stop, plan.query_rows)
    threads = torch.get_num_threads()
    workers = 1 if device.startswith("cuda") else min(threads, len(starts))
    if workers <= 1:
        with torch.inference_mode():
            for start in starts:
                single_threaded(search_chunk, threads, start) if device == "cpu" else search_chunk(start)
    else:
        # One single-threaded worker per core, each taking the next chunk when it is done: no barrier between
        # cores inside every op, and every block is scored by the same single-threaded kernel wherever it runs.
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(functools.partial(single_threaded, search_chunk, threads), starts))
    return scores_out, columns_out


def merge_candidates(parts, m: int):
    """Return the best m of several (scores, columns) candidate lists of the same rows, best first."""
    import torch

    scores = torch.from_numpy(np.concatenate([part[0] for part in parts], axis=1))
    columns = torch.from_numpy(np.concatenate([part[1] for part in parts], axis=1))
    values, picked = sort_total_order(scores, columns)
    return values[:, :m].numpy().copy(), picked[:, :m].numpy().copy()


def finish(query: np.ndarray, reference: np.ndarray, scores: np.ndarray, columns: np.ndarray, k: int, *,
           bf16: bool, device: str, query_start: int = 0, rerank_step_bytes: int = 16 * 2**20):
    """Return (similarities, indices) (n, k): the candidates re-ranked in float32 where they were bf16 scores."""
    import torch

    if not bf16:
        return scores[:, :k], columns[:, :k]
    with torch.inference_mode():
        exact = np.empty(scores.shape, dtype=np.float32)
        dim = reference.shape[1]
        step = max(1, rerank_step_bytes // (columns.shape[1] * dim * 4))
        for start in range(0, len(columns), step):
            stop = min(start + step, len(columns))
            rows = _convert(query[query_start + start:query_start + stop], device, torch.float32)
            flat = columns[start:stop].reshape(-1)
            gathered = _convert(np.take(reference, flat, axis=0), device, torch.float32)
            gathered = gathered.view(stop - start, columns.shape[1], dim)
            exact[start:stop] = (gathered * rows[:, None, :]).sum(dim=2).cpu().numpy()
        values, picked = sort_total_order(torch.from_numpy(exact), torch.from_numpy(columns))
    return values[:, :k].numpy(), picked[:, :k].numpy()


def sort_total_order(values, columns):
    """Return (values, columns) of every row sorted by value descending, ties by column ascending."""
    import torch

    by_column = torch.argsort(columns, dim=1)
    values, columns = values.gather(1, by_column), columns.gather(1, by_column)
    values, order = torch.sort(values, dim=1, descending=True, stable=True)
    return values, columns.gather(1, order)


def merge_topk(values_a, columns_a, values_b, columns_b, m: int):
    """Return the best m of two candidate lists of the same rows under (value desc, column asc)."""
    import torch

    values, columns = sort_total_order(torch.cat([values_a, values_b], dim=1),
                                       torch.cat([columns_a, columns_b], dim=1))
    return values[:, :m], columns[:, :m]


def ordered_topk(scores, m: int, *, exact_ties: bool = True):
    """Return (values, columns) of each row's m best scores, best first, ties by the lower column.

    ``exact_ties=False`` (bf16 candidates) skips the tie fix-up: bf16 scores tie often at the cut-off, and the
    fix-up's pass over every tied row would cost more than it buys, since the candidates are re-ranked exactly
    and a different choice among tied candidates changes no result unless more than the margin tie there.
    The choice is still a deterministic function of the block, so a sharded search equals the single one.
    """
    import torch

    width = scores.shape[1]
    if not exact_ties or width <= m:
        return sort_total_order(*row_topk(scores, m))
    values, columns = sort_total_order(*row_topk(scores, m + 1))
    # Where the (m+1)-th best equals the m-th, columns tied at the cut-off were picked in no particular
    # order: sort those rows stably so the lowest columns win. (No pass over the whole block needed.)
    tied_rows = torch.nonzero(values[:, m] == values[:, m - 1]).flatten()
    values, columns = values[:, :m].contiguous(), columns[:, :m].contiguous()
    for first in range(0, len(tied_rows), _TIE_ROWS_PER_SORT):
        rows = tied_rows[first:first + _TIE_ROWS_PER_SORT]
        row_values, row_columns = torch.sort(scores[rows], dim=1, descending=True, stable=True)
        values[rows], columns[rows] = row_values[:, :m], row_columns[:, :m]
    return values, columns


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


def _mask_self(scores, diagonal_offset: int) -> None:
    """Set ``scores[i, i + diagonal_offset]`` to -inf wherever that column exists in the block."""
    import torch

    rows = torch.arange(scores.shape[0], device=scores.device)
    columns = rows + diagonal_offset
    inside = (columns >= 0) & (columns < scores.shape[1])
    scores[rows[inside], columns[inside]] = float("-inf")


def _convert(rows: np.ndarray, device: str, dtype):
    """Return ``rows`` (any float dtype, e.g. a float16 memory-map slice) as a tensor of ``dtype`` on ``device``."""
    import torch

    with warnings.catch_warnings():
        # A read-only array (a memory map) is fine: nothing here writes to it.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensor = torch.from_numpy(np.ascontiguousarray(rows))
    if tensor.dtype != torch.float32:
        tensor = tensor.float()  # float16 -> float32 is exact; bf16 is then rounded from the float32 values
    return tensor.to(device).to(dtype)


def single_threaded(function, threads_after: int, *args):
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
