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

from compkit.config import CompetitionConfig, ModelConfig
from compkit.embeddings.cache import fold_dir_inputs, load_centres, load_fold_embeddings, load_gallery
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
from compkit.retrieval.search import search, search_blended
from compkit.workspace import Workspace, atomic_path, fingerprint, is_fresh, stage_inputs, write_manifest


@dataclass(frozen=True)
class OOFNeighbors:
    """Neighbours of every training row that has an OOF embedding, in training-table order.

    `indices` point into the training rows; `labels` are integer codes of the training labels; for identify,
    `query_truth` is each row's label code or -2 (`NEW_INDIVIDUAL`) when its fold's gallery lacks it;
    `head_similarities` (identify, margin-head models) each neighbour's individual's score by the fold's
    head, aligned with `indices` (see compkit.retrieval.head_scores).
    """

    ids: np.ndarray
    labels: np.ndarray
    folds: np.ndarray
    similarities: np.ndarray
    indices: np.ndarray
    candidates: str
    query_truth: np.ndarray | None = None
    head_similarities: np.ndarray | None = None


def single_inputs(config: CompetitionConfig, model: ModelConfig, workspace: Workspace, candidates: str) -> dict:
    """Return what a single model's OOF neighbour lists are made from: every fold's embeddings and the depth."""
    return {
        "embeddings": [fingerprint(stage_inputs(fold_dir_inputs(config, model, f, workspace)))
                       for f in workspace.fold_range()],
        "candidates": candidates,
        "depth": search_depth(config),
        "blend": [config.postprocess.blend_stages, config.postprocess.blend_threshold],
        "task": config.task,
        "head_scores": config.task == "identify",
    }


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
    depth, space, backend = search_depth(config), config.postprocess, config.neighbors.backend
    n_rows = len(layout.table)
    similarities = np.full((n_rows, depth), -np.inf, dtype=np.float32)
    indices = np.full((n_rows, depth), -1, dtype=np.int64)
    if candidates == "all":
        matrix = all_rows_matrix(config, model, layout.table, layout.rows_of_fold, folds_data)
        found_similarities, found = search_blended(matrix, depth, stages=space.blend_stages,
                                                   threshold=space.blend_threshold, backend=backend)
        similarities[:, : found.shape[1]], indices[:, : found.shape[1]] = found_similarities, found
    else:
        for rows, (_, oof, _) in zip(layout.rows_of_fold, folds_data, strict=True):
            found_similarities, found = search_blended(oof, depth, stages=space.blend_stages,
                                                       threshold=space.blend_threshold, backend=backend)
            similarities[rows, : found.shape[1]], indices[rows, : found.shape[1]] = found_similarities, rows[found]
    covered = layout.covered
    return OOFNeighbors(
        layout.table[config.columns.id].to_numpy(dtype=str)[covered], layout.labels[covered],
        layout.fold_of_row[covered], similarities[covered],
        renumbered(indices[covered], covered_positions(covered)), candidates,
    )


def _identify(config, model, workspace, layout: TrainingRows, folds_data) -> OOFNeighbors:
    depth, backend = search_depth(config), config.neighbors.backend
    n_rows = len(layout.table)
    similarities = np.full((n_rows, depth), -np.inf, dtype=np.float32)
    indices = np.full((n_rows, depth), -1, dtype=np.int64)
    head = np.full((n_rows, depth), np.nan, dtype=np.float32)
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
    truth = identify_truth(layout.labels, layout.fold_of_row)
    covered = layout.covered
    fused = head[covered] if all(c is not None for c in centres) else None
    return OOFNeighbors(
        layout.table[config.columns.id].to_numpy(dtype=str)[covered], layout.labels, layout.fold_of_row[covered],
        similarities[covered], indices[covered], "fold", truth[covered], fused,
    )
