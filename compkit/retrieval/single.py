"""Out-of-fold neighbour lists of one (single) model, computed once (fold-aware) and cached for tuning.

Which rows each fold's queries search is `compkit.retrieval.layout`'s; the search itself is
`compkit.retrieval.search`'s. The cache, `tuning/<model>/neighbors-<candidates>.npz`, is fresh while its
manifest's inputs (every fold's embeddings, the candidate set, the depth, the blending) are unchanged.
"""

from __future__ import annotations

import contextlib
import zipfile
from dataclasses import dataclass

import numpy as np

from compkit.config import CompetitionConfig, ModelConfig, NeighborSettings
from compkit.embeddings.cache import fold_dir_inputs, load_centres, load_fold_embeddings, load_gallery
from compkit.postprocess.query_gallery import PEER_DEPTH, peers_without_self
from compkit.retrieval.expansion import expansion_inputs, search_expanded
from compkit.retrieval.head_scores import centre_rows, head_similarities
from compkit.retrieval.layout import (
    TrainingRows,
    all_rows_matrix,
    covered_positions,
    identify_truth,
    renumbered,
    resolve_candidates,
    search_depth,
    training_rows,
)
from compkit.retrieval.search import search
from compkit.workspace import Workspace, atomic_path, fingerprint, is_fresh, stage_inputs, write_manifest


@dataclass(frozen=True)
class OOFNeighbors:
    """Neighbours of every training row that has an OOF embedding, in training-table order.

    `indices` point into the training rows; `labels` are integer codes of the training labels; for identify,
    `query_truth` is each row's label code or -2 (`NEW_INDIVIDUAL`) when its fold's gallery lacks it;
    `head_similarities` (identify, margin-head models) each neighbour's individual's score by the fold's
    head, aligned with `indices` (see compkit.retrieval.head_scores); `peer_*` (identify, `test_in_gallery`)
    each query's nearest other queries of its fold, the confident ones of which join its gallery
    (compkit.postprocess.query_gallery).
    """

    ids: np.ndarray
    labels: np.ndarray
    folds: np.ndarray
    similarities: np.ndarray
    indices: np.ndarray
    candidates: str
    query_truth: np.ndarray | None = None
    head_similarities: np.ndarray | None = None
    peer_similarities: np.ndarray | None = None
    peer_indices: np.ndarray | None = None

    @property
    def peers(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Return each query's nearest other queries of its own fold (positions among these rows), when searched."""
        return None if self.peer_indices is None else (self.peer_similarities, self.peer_indices)


def single_inputs(config: CompetitionConfig, model: ModelConfig, workspace: Workspace, candidates: str) -> dict:
    """Return what a single model's OOF neighbour lists are made from: every fold's embeddings and the depth."""
    inputs = {
        "embeddings": [fingerprint(stage_inputs(fold_dir_inputs(config, model, f, workspace)))
                       for f in workspace.fold_range()],
        "candidates": candidates,
        "depth": search_depth(config),
        "blend": [config.postprocess.blend_stages, config.postprocess.blend_threshold],
        "task": config.task,
        "head_scores": config.task == "identify",
    }
    if _with_peers(config):  # only then, so the caches made without it stay fresh
        inputs["peers"] = PEER_DEPTH
    if config.task == "match":
        inputs.update(expansion_inputs(config.postprocess))  # alpha-QE / DBA; {} when off
    inputs.update(index_inputs(config.neighbors))
    return inputs


def index_inputs(neighbors: NeighborSettings) -> dict:
    """Return what an approximate index adds to a neighbour list's inputs ({} for exact search, as before)."""
    if neighbors.index == "exact":
        return {}
    return {"index": [neighbors.index, neighbors.ivf_lists, neighbors.ivf_probes]}


def _with_peers(config: CompetitionConfig) -> bool:
    return config.task == "identify" and config.postprocess.test_in_gallery


def oof_neighbors(
    config: CompetitionConfig, model: ModelConfig, workspace: Workspace, *, candidates: str = "all"
) -> OOFNeighbors:
    """Return the model's OOF neighbour lists, from the cache when fresh."""
    candidates = resolve_candidates(config, candidates)
    path = workspace.neighbors_cache(model.name, candidates)
    inputs = single_inputs(config, model, workspace, candidates)
    if is_fresh(path, inputs):
        with contextlib.suppress(OSError, ValueError, KeyError, zipfile.BadZipFile):  # damaged: made again
            return _load(path, candidates)
    neighbors = _compute(config, model, workspace, candidates)
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, **{k: v for k, v in neighbors.__dict__.items() if isinstance(v, np.ndarray)})
    write_manifest(path, inputs, rows=len(neighbors.ids))
    return neighbors


def _load(path, candidates: str) -> OOFNeighbors:
    with np.load(path, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    return OOFNeighbors(candidates=candidates, **arrays)


def _compute(config: CompetitionConfig, model: ModelConfig, workspace: Workspace, candidates: str) -> OOFNeighbors:
    folds_data = [load_fold_embeddings(config, model, f, workspace) for f in workspace.fold_range()]
    layout = training_rows(config, workspace, [ids for ids, _, _ in folds_data])
    if config.task == "identify":
        return _identify(config, model, workspace, layout, folds_data)
    return _match(config, model, layout, folds_data, candidates)


def _match(config, model, layout: TrainingRows, folds_data, candidates) -> OOFNeighbors:
    depth, space, backend = search_depth(config), config.postprocess, config.neighbors
    n_rows = len(layout.table)
    similarities = np.full((n_rows, depth), -np.inf, dtype=np.float32)
    indices = np.full((n_rows, depth), -1, dtype=np.int64)
    if candidates == "all":
        matrix = all_rows_matrix(config, model, layout.table, layout.rows_of_fold, folds_data)
        found_similarities, found = search_expanded(matrix, depth, space=space, backend=backend)
        similarities[:, : found.shape[1]], indices[:, : found.shape[1]] = found_similarities, found
    else:
        for rows, (_, oof, _) in zip(layout.rows_of_fold, folds_data, strict=True):
            found_similarities, found = search_expanded(oof, depth, space=space, backend=backend)
            similarities[rows, : found.shape[1]], indices[rows, : found.shape[1]] = found_similarities, rows[found]
    covered = layout.covered
    return OOFNeighbors(
        layout.table[config.columns.id].to_numpy(dtype=str)[covered], layout.labels[covered],
        layout.fold_of_row[covered], similarities[covered],
        renumbered(indices[covered], covered_positions(covered)), candidates,
    )


def _identify(config, model, workspace, layout: TrainingRows, folds_data) -> OOFNeighbors:
    depth, backend = search_depth(config), config.neighbors
    n_rows = len(layout.table)
    similarities = np.full((n_rows, depth), -np.inf, dtype=np.float32)
    indices = np.full((n_rows, depth), -1, dtype=np.int64)
    head = np.full((n_rows, depth), np.nan, dtype=np.float32)
    peer_similarities = np.full((n_rows, PEER_DEPTH), -np.inf, dtype=np.float32)
    peer_indices = np.full((n_rows, PEER_DEPTH), -1, dtype=np.int64)
    position = covered_positions(layout.covered)
    classes = np.asarray(layout.table[config.columns.label].unique(), dtype=str)  # in label-code order
    centres = [load_centres(config, model, fold, workspace) for fold in workspace.fold_range()]
    for fold, (rows, (_, oof, _)) in enumerate(zip(layout.rows_of_fold, folds_data, strict=True)):
        gallery_rows = layout.gallery_rows(fold)
        gallery = np.asarray(load_gallery(config, model, fold, workspace))[gallery_rows]
        found_similarities, found = search(np.asarray(oof), gallery, depth, backend=backend)
        width = found.shape[1]
        similarities[rows, :width], indices[rows, :width] = found_similarities, gallery_rows[found]
        if centres[fold] is not None:
            codes = np.where(found >= 0, layout.labels[gallery_rows[found]], -1)
            labels, vectors = centres[fold]
            head[rows, :width] = head_similarities(np.asarray(oof), codes, vectors, centre_rows(labels, classes))
        if _with_peers(config):  # the fold's other queries: its "test set", which no other fold's gallery holds
            found_peers = peers_without_self(*search(np.asarray(oof), np.asarray(oof), PEER_DEPTH + 1,
                                                     backend=backend))
            peer_similarities[rows], peer_indices[rows] = found_peers[0], renumbered(found_peers[1], position[rows])
    truth = identify_truth(layout.labels, layout.fold_of_row)
    covered = layout.covered
    fused = head[covered] if all(c is not None for c in centres) else None
    peers = (peer_similarities[covered], peer_indices[covered]) if _with_peers(config) else (None, None)
    return OOFNeighbors(
        layout.table[config.columns.id].to_numpy(dtype=str)[covered], layout.labels, layout.fold_of_row[covered],
        similarities[covered], indices[covered], "fold", truth[covered], fused, *peers,
    )
