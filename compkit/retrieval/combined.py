"""The candidate tables of combined (union, concat and score) models: their members' neighbour lists merged.

OOF tables are searched exactly as each member's own OOF lists are (match: against all training rows or
within the fold, after blending; identify: each fold against the other folds' gallery embedded by that
fold's model) and cached in `tuning/<model>/candidates-<candidates>.npz`; their manifest is made of the
members' single-model neighbour inputs, so a retrained member makes them stale. Test tables are built on
demand. Concat models also fill in the similarities a member did not list (see `compkit.retrieval.search`).
"""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from compkit.config import CombinedModel, CompetitionConfig
from compkit.embeddings.cache import (
    combined_gallery_embeddings,
    combined_test_embeddings,
    load_fold_embeddings,
    load_gallery,
)
from compkit.postprocess.combined import CandidateTable
from compkit.retrieval.layout import (
    all_rows_matrix,
    covered_positions,
    identify_truth,
    renumbered,
    resolve_candidates,
    search_depth,
    training_rows,
)
from compkit.retrieval.search import MemberSearch, combined_search
from compkit.retrieval.single import single_inputs
from compkit.schema import to_plain
from compkit.workspace import Workspace, atomic_path, is_fresh, write_manifest


@dataclass(frozen=True)
class CandidateNeighbors:
    """A combined model's OOF candidates, row for row like `OOFNeighbors` (indices into the training rows)."""

    ids: np.ndarray
    labels: np.ndarray
    folds: np.ndarray
    table: CandidateTable
    candidates: str
    query_truth: np.ndarray | None = None


def combined_inputs(config: CompetitionConfig, model: CombinedModel, workspace: Workspace, candidates: str) -> dict:
    """Return what a combined model's OOF candidates are made from: its spec and its members' neighbour inputs."""
    return {
        "model": to_plain(model),
        "members": [single_inputs(config, config.model(name), workspace, candidates) for name in model.members],
    }


def needs_exact(model: CombinedModel) -> bool:
    """Return whether the model scores candidates a member did not list (concat: a weighted similarity sum)."""
    return model.kind == "concat"


def oof_candidates(
    config: CompetitionConfig, model: CombinedModel, workspace: Workspace, *, candidates: str = "all"
) -> CandidateNeighbors:
    """Return the model's OOF candidate table, from the cache when fresh."""
    candidates = resolve_candidates(config, candidates)
    path = workspace.candidates_cache(model.name, candidates)
    inputs = combined_inputs(config, model, workspace, candidates)
    if is_fresh(path, inputs):
        with contextlib.suppress(OSError, ValueError, KeyError, zipfile.BadZipFile):  # damaged: made again
            return _load(path, candidates)
    neighbors = _compute(config, model, workspace, candidates)
    arrays = {"ids": neighbors.ids, "labels": neighbors.labels, "folds": neighbors.folds,
              "indices": neighbors.table.indices, "similarities": neighbors.table.similarities,
              "ranks": neighbors.table.ranks}
    if neighbors.query_truth is not None:
        arrays["query_truth"] = neighbors.query_truth
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, **arrays)
    write_manifest(path, inputs, rows=len(neighbors.ids))
    return neighbors


def _load(path, candidates: str) -> CandidateNeighbors:
    with np.load(path, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    table = CandidateTable(arrays.pop("indices"), arrays.pop("similarities"), arrays.pop("ranks"))
    return CandidateNeighbors(table=table, candidates=candidates, **arrays)


def _compute(config: CompetitionConfig, model: CombinedModel, workspace: Workspace, candidates: str):
    members = [config.model(name) for name in model.members]
    folds_data = [[load_fold_embeddings(config, member, f, workspace) for f in workspace.fold_range()]
                  for member in members]
    layout = training_rows(config, workspace, [ids for ids, _, _ in folds_data[0]])
    train, n_rows = layout.table, len(layout.table)
    depth, space, exact = search_depth(config), config.postprocess, needs_exact(model)
    blending = {"blend_stages": space.blend_stages, "blend_threshold": space.blend_threshold}
    backend = config.neighbors  # the whole [neighbors] table: backend, memory, scheduler, index
    parts = []
    if config.task == "identify":
        for fold, rows in enumerate(layout.rows_of_fold):
            gallery_rows = layout.gallery_rows(fold)
            searches = [MemberSearch(_loaded(data[fold][1]),
                                     np.asarray(load_gallery(config, member, fold, workspace))[gallery_rows])
                        for member, data in zip(members, folds_data, strict=True)]
            table = combined_search(searches, depth, exact=exact, backend=backend)
            parts.append((rows, _mapped(table, gallery_rows)))
    elif candidates == "all":
        searches = [MemberSearch(all_rows_matrix(config, member, train, layout.rows_of_fold, data))
                    for member, data in zip(members, folds_data, strict=True)]
        parts.append((np.arange(n_rows), combined_search(searches, depth, exact=exact, backend=backend, **blending)))
    else:
        for fold, rows in enumerate(layout.rows_of_fold):
            searches = [MemberSearch(_loaded(data[fold][1])) for data in folds_data]
            table = combined_search(searches, depth, exact=exact, backend=backend, **blending)
            parts.append((rows, _mapped(table, rows)))
    table = place_rows(parts, n_rows)
    covered = layout.covered
    ids = train[config.columns.id].to_numpy(dtype=str)[covered]
    table = CandidateTable(table.indices[covered], table.similarities[:, covered], table.ranks[:, covered])
    folds = layout.fold_of_row[covered]
    if config.task == "identify":
        truth = identify_truth(layout.labels, layout.fold_of_row)[covered]
        return CandidateNeighbors(ids, layout.labels, folds, table, candidates, truth)
    match_table = _mapped(table, covered_positions(covered))  # match: indices point into the covered rows only
    return CandidateNeighbors(ids, layout.labels[covered], folds, match_table, candidates)


def test_candidates(config: CompetitionConfig, model: CombinedModel, workspace: Workspace) -> CandidateTable:
    """Return the model's test candidates: test rows (match) or training rows (identify's gallery)."""
    members = [config.model(name) for name in model.members]
    folds = workspace.fold_range()
    space, backend = config.postprocess, config.neighbors
    if config.task == "identify":
        searches = [MemberSearch(combined_test_embeddings(config, member, workspace, folds),
                                 combined_gallery_embeddings(config, member, workspace, folds)) for member in members]
        return combined_search(searches, search_depth(config), exact=needs_exact(model), backend=backend)
    searches = [MemberSearch(combined_test_embeddings(config, member, workspace, folds)) for member in members]
    return combined_search(searches, search_depth(config), exact=needs_exact(model), backend=backend,
                           blend_stages=space.blend_stages, blend_threshold=space.blend_threshold)


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


def _loaded(matrix):
    """Return a cached (memory-mapped) embedding matrix in memory; sparse TF-IDF matrices as they are."""
    return matrix if sp.issparse(matrix) else np.asarray(matrix)


def _mapped(table: CandidateTable, rows: np.ndarray) -> CandidateTable:
    """Return the table with its (local) candidate indices replaced by `rows[index]` (-1 stays -1)."""
    return CandidateTable(renumbered(table.indices, rows), table.similarities, table.ranks)
