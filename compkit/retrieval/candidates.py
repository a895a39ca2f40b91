"""Several members' neighbour lists of the same queries, merged into one candidate list per query.

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

from compkit.postprocess.rules import first_occurrences

BLOCK_VALUES = 1 << 22  # gathered embedding values per block of pairs: bounds the temporaries


@dataclass(frozen=True)
class CandidateTable:
    """Merged candidates of n queries from m members.

    `indices` (n, K): reference rows, best rank first, -1 pads; `similarities` (m, n, K) float32, -inf where
    unknown or padded; `ranks` (m, n, K) int32: position in the member's own list, -1 where not listed.
    """

    indices: np.ndarray
    similarities: np.ndarray
    ranks: np.ndarray

    @property
    def listed(self) -> np.ndarray:
        return self.ranks >= 0


@dataclass(frozen=True)
class MemberSearch:
    """One member's embeddings for one search: the queries, and what they search (None: themselves)."""

    query: Any
    reference: Any = None


def merge_lists(indices: Sequence[np.ndarray], similarities: Sequence[np.ndarray]) -> CandidateTable:
    """Return the members' (n, k_j) neighbour lists (-1 pads) merged into one CandidateTable."""
    n_members, n_rows = len(indices), len(indices[0])
    depth = max(member.shape[1] for member in indices)
    stacked = np.full((n_members, n_rows, depth), -1, dtype=np.int64)
    for member, member_indices in enumerate(indices):
        stacked[member, :, : member_indices.shape[1]] = member_indices
    interleaved = stacked.transpose(1, 2, 0).reshape(n_rows, depth * n_members)  # column = rank * m + member
    first = first_occurrences(interleaved)
    column = np.cumsum(first, axis=1) - 1
    rows, columns = np.nonzero(first)
    width = int(first.sum(axis=1).max(initial=0))
    merged = np.full((n_rows, width), -1, dtype=np.int64)
    merged[rows, column[rows, columns]] = interleaved[rows, columns]

    n_reference = int(interleaved.max(initial=0)) + 1
    first_keys = rows * n_reference + interleaved[rows, columns]
    order = np.argsort(first_keys)
    sorted_keys, sorted_columns = first_keys[order], column[rows, columns][order]
    merged_similarities = np.full((n_members, n_rows, width), -np.inf, dtype=np.float32)
    ranks = np.full((n_members, n_rows, width), -1, dtype=np.int32)
    for member, (member_indices, member_similarities) in enumerate(zip(indices, similarities, strict=True)):
        row, rank = np.nonzero(member_indices >= 0)
        position = sorted_columns[np.searchsorted(sorted_keys, row * n_reference + member_indices[row, rank])]
        merged_similarities[member, row, position] = member_similarities[row, rank]
        ranks[member, row, position] = rank
    return CandidateTable(merged, merged_similarities, ranks)


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
    members: Sequence[MemberSearch], depth: int, *, exact: bool, blend_stages: int = 0, blend_threshold: float = 1.0
) -> CandidateTable:
    """Return the merged top-`depth` candidates of every member's search; `exact`: all similarities filled in.

    A member searching its own rows (reference None) is blended first (`blend_stages`), as a single model's
    OOF and test searches are; exact similarities come from the blended embeddings.
    """
    from compkit.retrieval.single import blend_and_search

    lists, embeddings = [], []
    for member in members:
        if member.reference is None:
            matrix, found_similarities, found = blend_and_search(
                member.query, depth, stages=blend_stages, threshold=blend_threshold
            )
            embeddings.append((matrix, matrix))
        else:
            found_similarities, found = _search(member.query, member.reference, min(depth, member.reference.shape[0]))
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


def _search(query, reference, depth: int):
    from compkit.neighbors import get_backend
    from compkit.neighbors.sparse import get_sparse_backend

    backend = get_sparse_backend("auto") if sp.issparse(reference) else get_backend("auto")
    return backend.search(query, reference, depth)


def place_rows(tables: Sequence[tuple[np.ndarray, CandidateTable]], n_rows: int) -> CandidateTable:
    """Return one table of `n_rows` queries from (query rows, table) parts; rows no part covers stay padded."""
    n_members = tables[0][1].similarities.shape[0]
    width = max(table.indices.shape[1] for _, table in tables)
    indices = np.full((n_rows, width), -1, dtype=np.int64)
    similarities = np.full((n_members, n_rows, width), -np.inf, dtype=np.float32)
    ranks = np.full((n_members, n_rows, width), -1, dtype=np.int32)
    for rows, table in tables:
        part = table.indices.shape[1]
        indices[rows, :part] = table.indices
        similarities[:, rows, :part] = table.similarities
        ranks[:, rows, :part] = table.ranks
    return CandidateTable(indices, similarities, ranks)
