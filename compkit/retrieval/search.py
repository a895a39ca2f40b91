"""One kNN search for dense and sparse rows, neighbourhood blending, and the members' combined search.

`search` is the one place that picks a backend: a scipy-sparse reference (TF-IDF) goes to the sparse search,
a dense one to the dense backend the config's `[neighbors] backend` (or `--knn`) names. Results are equal
across backends (exact cosine top-k), so the backend enters no fingerprint.

A union, concat or score model never searches a combined embedding: each member searches its own, and a
query's candidates are the union of the members' top-k lists, ordered by their best rank in any member's list
(ties: the member listed first). For every candidate the table keeps each member's rank in its own list (-1
where that member did not list it) and its similarity: the listed one, or, where exact similarities are asked
for, the dot product of the two rows' embeddings computed for those candidate pairs only (row-wise, in
blocks; never an n x n matrix). Dense and sparse (TF-IDF) members mix freely.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from compkit.config import NeighborSettings
from compkit.neighbors import get_backend, get_sparse_backend, make_search
from compkit.neighbors.base import SearchResult
from compkit.postprocess.combined import CandidateTable, merge_lists
from compkit.postprocess.matches import blend_embeddings

BLOCK_VALUES = 1 << 22  # gathered embedding values per block of pairs: bounds the temporaries


def search(query, reference, depth: int, *, backend: str | NeighborSettings) -> SearchResult:
    """Return (similarities, indices) of every query row's `depth` (at most all) nearest reference rows.

    Sparse rows are searched by the sparse search ("auto": cuML where it can run, else scipy); dense rows by
    the dense backend called `backend` ("auto", "torch", "faiss" or "cuml"), or the search the whole
    `[neighbors]` table describes (`config.neighbors`: memory budget, Dask scheduler, IVF index). Dense rows
    may be float16 memory maps: the torch and Dask searches read them block by block.
    """
    depth = min(depth, reference.shape[0])
    if sp.issparse(reference):
        return get_sparse_backend("auto").search(query, reference, depth)
    dense = make_search(backend) if isinstance(backend, NeighborSettings) else get_backend(backend)
    return dense.search(query, reference, depth)


def search_blended(matrix, depth: int, *, stages: int, threshold: float,
                   backend: str | NeighborSettings) -> SearchResult:
    """Return the set's neighbours within itself, after `stages` rounds of neighbourhood blending."""
    return blend_and_search(matrix, depth, stages=stages, threshold=threshold, backend=backend)[1:]


def blend_and_search(matrix, depth: int, *, stages: int, threshold: float, backend: str | NeighborSettings):
    """Return (blended matrix, similarities, indices): the set's neighbours within itself after blending."""
    similarities, indices = search(matrix, matrix, depth, backend=backend)
    for _ in range(stages):
        matrix = blend_embeddings(matrix, similarities, indices, threshold)
        similarities, indices = search(matrix, matrix, depth, backend=backend)
    return matrix, similarities, indices


@dataclass(frozen=True)
class MemberSearch:
    """One member's embeddings for one search: the queries, and what they search (None: themselves)."""

    query: Any
    reference: Any = None


def pair_similarities(query, reference, query_rows: np.ndarray, reference_rows: np.ndarray) -> np.ndarray:
    """Return the dot products of query row q_i and reference row r_i for every pair i (dense or sparse)."""
    out = np.empty(len(query_rows), dtype=np.float32)
    block = max(1, BLOCK_VALUES // max(1, query.shape[1]))
    for start in range(0, len(query_rows), block):
        stop = start + block
        left, right = query[query_rows[start:stop]], reference[reference_rows[start:stop]]
        if sp.issparse(left):
            out[start:stop] = np.asarray(left.multiply(right).sum(axis=1)).ravel()
        else:
            out[start:stop] = np.einsum("ij,ij->i", np.asarray(left, np.float32), np.asarray(right, np.float32))
    return out


def combined_search(
    members: Sequence[MemberSearch], depth: int, *, exact: bool, backend: str | NeighborSettings,
    blend_stages: int = 0,
    blend_threshold: float = 1.0,
) -> CandidateTable:
    """Return the merged top-`depth` candidates of every member's search; `exact`: all similarities filled in.

    A member searching its own rows (reference None) is blended first (`blend_stages`), as a single model's
    OOF and test searches are; exact similarities come from the blended embeddings.
    """
    lists, embeddings = [], []
    for member in members:
        if member.reference is None:
            matrix, found_similarities, found = blend_and_search(
                member.query, depth, stages=blend_stages, threshold=blend_threshold, backend=backend
            )
            embeddings.append((matrix, matrix))
        else:
            found_similarities, found = search(member.query, member.reference, depth, backend=backend)
            embeddings.append((member.query, member.reference))
        lists.append((found, found_similarities))
    table = merge_lists([found for found, _ in lists], [found_similarities for _, found_similarities in lists])
    if exact:
        for member, (query, reference) in enumerate(embeddings):
            rows, columns = np.nonzero((table.ranks[member] < 0) & (table.indices >= 0))
            table.similarities[member, rows, columns] = pair_similarities(
                query, reference, rows, table.indices[rows, columns]
            )
    return table
