"""The candidate tables of union, concat and score models: their members' neighbour lists merged, OOF and test.

OOF tables are searched exactly as each member's own OOF lists are (match: against all training rows or
within the fold, after blending; identify: each fold against the other folds' gallery embedded by that
fold's model) and cached in `tuning/<model>/candidates-<candidates>.npz`; their manifest is made of the
members' embedding fingerprints, so a retrained member makes them stale. Test tables are built on demand.
Concat models also fill in the similarities a member did not list (see `compkit.retrieval.candidates`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from compkit.config import CombinedModel, CompetitionConfig
from compkit.embeddings.cache import (
    combined_gallery_embeddings,
    combined_test_embeddings,
    load_fold_embeddings,
    load_gallery,
)
from compkit.retrieval.candidates import CandidateTable, MemberSearch, combined_search, place_rows
from compkit.retrieval.single import all_rows_matrix, identify_truth, neighbors_inputs, resolve_candidates, search_depth
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
    from compkit.schema import to_plain

    return {
        "model": to_plain(model),
        "members": [neighbors_inputs(config, config.model(name), workspace, candidates) for name in model.members],
    }


def needs_exact(model: CombinedModel) -> bool:
    """Return whether the model scores candidates a member did not list (concat: a weighted similarity sum)."""
    return model.kind == "concat"


def oof_candidates(
    config: CompetitionConfig, model: CombinedModel, workspace: Workspace, *, candidates: str = "all"
) -> CandidateNeighbors:
    """Return the model's OOF candidate table, from the cache when fresh."""
    candidates = resolve_candidates(config, candidates)
    path = workspace.tuning_dir / model.name / f"candidates-{candidates}.npz"
    inputs = combined_inputs(config, model, workspace, candidates)
    if is_fresh(path, inputs):
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
    from compkit.data.tables import load_train

    train = load_train(config, workspace)
    position = pd.Index(train[config.columns.id])
    labels = pd.factorize(train[config.columns.label])[0].astype(np.int64)
    members = [config.model(name) for name in model.members]
    folds_data = [[load_fold_embeddings(config, member, f, workspace) for f in range(config.folds.n_splits)]
                  for member in members]
    rows_of_fold = [position.get_indexer(ids) for ids, _, _ in folds_data[0]]
    fold_of_row = np.full(len(train), -1, dtype=np.int64)
    for fold, rows in enumerate(rows_of_fold):
        fold_of_row[rows] = fold
    depth, space, exact = search_depth(config), config.postprocess, needs_exact(model)
    parts = []
    if config.task == "identify":
        for fold, rows in enumerate(rows_of_fold):
            gallery_rows = np.setdiff1d(np.arange(len(train)), rows)
            searches = [MemberSearch(_loaded(data[fold][1]),
                                     np.asarray(load_gallery(config, member, fold, workspace))[gallery_rows])
                        for member, data in zip(members, folds_data, strict=True)]
            parts.append((rows, _mapped(combined_search(searches, depth, exact=exact), gallery_rows)))
    elif candidates == "all":
        searches = [MemberSearch(all_rows_matrix(config, member, train, rows_of_fold, data))
                    for member, data in zip(members, folds_data, strict=True)]
        table = combined_search(searches, depth, exact=exact, blend_stages=space.blend_stages,
                                blend_threshold=space.blend_threshold)
        parts.append((np.arange(len(train)), table))
    else:
        for fold, rows in enumerate(rows_of_fold):
            searches = [MemberSearch(_loaded(data[fold][1])) for data in folds_data]
            table = combined_search(searches, depth, exact=exact, blend_stages=space.blend_stages,
                                    blend_threshold=space.blend_threshold)
            parts.append((rows, _mapped(table, rows)))
    table = place_rows(parts, len(train))
    covered = fold_of_row >= 0
    ids = train[config.columns.id].to_numpy(dtype=str)[covered]
    table = CandidateTable(table.indices[covered], table.similarities[:, covered], table.ranks[:, covered])
    if config.task == "identify":
        truth = identify_truth(labels, fold_of_row)[covered]
        return CandidateNeighbors(ids, labels, fold_of_row[covered], table, candidates, truth)
    renumbered = _mapped(table, np.cumsum(covered) - 1)  # match: indices point into the covered rows only
    return CandidateNeighbors(ids, labels[covered], fold_of_row[covered], renumbered, candidates)


def test_candidates(config: CompetitionConfig, model: CombinedModel, workspace: Workspace) -> CandidateTable:
    """Return the model's test candidates: test rows (match) or training rows (identify's gallery)."""
    members = [config.model(name) for name in model.members]
    folds = list(range(config.folds.n_splits))
    space = config.postprocess
    if config.task == "identify":
        searches = [MemberSearch(combined_test_embeddings(config, member, workspace, folds),
                                 combined_gallery_embeddings(config, member, workspace, folds)) for member in members]
        return combined_search(searches, search_depth(config), exact=needs_exact(model))
    searches = [MemberSearch(combined_test_embeddings(config, member, workspace, folds)) for member in members]
    return combined_search(searches, search_depth(config), exact=needs_exact(model),
                           blend_stages=space.blend_stages, blend_threshold=space.blend_threshold)


def _loaded(matrix):
    """Return a cached (memory-mapped) embedding matrix in memory; sparse TF-IDF matrices as they are."""
    return matrix if sp.issparse(matrix) else np.asarray(matrix)


def _mapped(table: CandidateTable, rows: np.ndarray) -> CandidateTable:
    """Return the table with its (local) candidate indices replaced by `rows[index]` (-1 stays -1)."""
    indices = np.where(table.indices >= 0, rows[np.clip(table.indices, 0, None)], -1)
    return CandidateTable(indices, table.similarities, table.ranks)
