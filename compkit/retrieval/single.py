"""Out-of-fold neighbour lists of one model, computed once (fold-aware) and cached for tuning.

match: each validation fold's rows are searched against candidates. `candidates="all"` (the default, as the
top Shopee teams did) searches the whole training set's OOF embeddings, so the density of distractors is
like the test set's; `candidates="fold"` searches only the fold itself. Since no label group crosses folds,
every true match of a row lies in its own fold either way. TF-IDF vectors of different folds live in
different vocabularies, so "all" refits TF-IDF once on every training row (unsupervised, as competitors fit
it on the test set).
identify: each validation fold's images (embedded by that fold's model) search the other folds' images
embedded by the same model: the gallery that model saw in training, as the test images will.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from compkit.config import COMBINED_KINDS, CompetitionConfig, ModelConfig
from compkit.embeddings.cache import fold_dir_inputs, load_fold_embeddings, load_gallery
from compkit.errors import ConfigError
from compkit.workspace import Workspace, atomic_path, fingerprint, is_fresh, stage_inputs, write_manifest

Candidates = Literal["all", "fold"]
CANDIDATES = ("all", "fold")


@dataclass(frozen=True)
class OOFNeighbors:
    """Neighbours of every training row that has an OOF embedding, in training-table order.

    `indices` point into the training rows; `labels` are integer codes of the training labels; for identify,
    `query_truth` is each row's label code or -2 (`NEW_INDIVIDUAL`) when its fold's gallery lacks it.
    """

    ids: np.ndarray
    labels: np.ndarray
    folds: np.ndarray
    similarities: np.ndarray
    indices: np.ndarray
    candidates: str
    query_truth: np.ndarray | None = None


NEW_INDIVIDUAL = -2


def neighbors_inputs(config: CompetitionConfig, model: ModelConfig, workspace: Workspace, candidates: str) -> dict:
    """Return what a model's OOF neighbour lists are made from: every fold's embeddings and the search depth."""
    if model.kind in COMBINED_KINDS:
        from compkit.retrieval.combined import combined_inputs

        return combined_inputs(config, model, workspace, candidates)
    return {
        "embeddings": [fingerprint(stage_inputs(fold_dir_inputs(config, model, f, workspace)))
                       for f in range(config.folds.n_splits)],
        "candidates": candidates,
        "depth": search_depth(config),
        "blend": [config.postprocess.blend_stages, config.postprocess.blend_threshold],
        "task": config.task,
    }


def search_depth(config: CompetitionConfig) -> int:
    return config.postprocess.max_matches if config.task == "match" else config.postprocess.top_n


def resolve_candidates(config: CompetitionConfig, candidates: str) -> str:
    """Return the candidate set to search: as asked for match; identify always searches the other folds."""
    if candidates not in CANDIDATES:
        raise ConfigError(f"--candidates must be 'all' or 'fold', got {candidates!r}")
    return "fold" if config.task == "identify" else candidates


def oof_neighbors(
    config: CompetitionConfig, model: ModelConfig, workspace: Workspace, *, candidates: str = "all"
) -> OOFNeighbors:
    """Return the model's OOF neighbour lists, from the cache when fresh."""
    candidates = resolve_candidates(config, candidates)
    path = workspace.tuning_dir / model.name / f"neighbors-{candidates}.npz"
    inputs = neighbors_inputs(config, model, workspace, candidates)
    if is_fresh(path, inputs):
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
    from compkit.data.tables import load_train

    train = load_train(config, workspace)
    position = pd.Index(train[config.columns.id])
    labels = pd.factorize(train[config.columns.label])[0].astype(np.int64)
    folds_data = [load_fold_embeddings(config, model, f, workspace) for f in range(config.folds.n_splits)]
    rows_of_fold = [position.get_indexer(ids) for ids, _, _ in folds_data]
    if config.task == "identify":
        return _identify(config, model, workspace, train, labels, rows_of_fold, folds_data)
    return _match(config, model, workspace, train, labels, rows_of_fold, folds_data, candidates)


def _match(config, model, workspace, train, labels, rows_of_fold, folds_data, candidates) -> OOFNeighbors:
    depth = search_depth(config)
    n_rows = len(train)
    fold_of_row = np.full(n_rows, -1, dtype=np.int64)
    for fold, rows in enumerate(rows_of_fold):
        fold_of_row[rows] = fold
    similarities = np.full((n_rows, depth), -np.inf, dtype=np.float32)
    indices = np.full((n_rows, depth), -1, dtype=np.int64)
    space = config.postprocess
    if candidates == "all":
        matrix = all_rows_matrix(config, model, train, rows_of_fold, folds_data)
        found_similarities, found = search_blended(matrix, depth, stages=space.blend_stages,
                                                   threshold=space.blend_threshold)
        similarities[:, : found.shape[1]], indices[:, : found.shape[1]] = found_similarities, found
    else:
        for rows, (_, oof, _) in zip(rows_of_fold, folds_data, strict=True):
            found_similarities, found = search_blended(oof, depth, stages=space.blend_stages,
                                                       threshold=space.blend_threshold)
            similarities[rows, : found.shape[1]], indices[rows, : found.shape[1]] = found_similarities, rows[found]
    covered = fold_of_row >= 0
    return OOFNeighbors(
        train[config.columns.id].to_numpy(dtype=str)[covered], labels[covered], fold_of_row[covered],
        similarities[covered], _reindex(indices[covered], covered), candidates,
    )


def _identify(config, model, workspace, train, labels, rows_of_fold, folds_data) -> OOFNeighbors:
    from compkit.neighbors import get_backend

    depth = search_depth(config)
    n_rows = len(train)
    knn = get_backend("auto")
    similarities = np.full((n_rows, depth), -np.inf, dtype=np.float32)
    indices = np.full((n_rows, depth), -1, dtype=np.int64)
    fold_of_row = np.full(n_rows, -1, dtype=np.int64)
    for fold, (rows, (_, oof, _)) in enumerate(zip(rows_of_fold, folds_data, strict=True)):
        fold_of_row[rows] = fold
        gallery_rows = np.setdiff1d(np.arange(n_rows), rows)
        gallery = np.asarray(load_gallery(config, model, fold, workspace))[gallery_rows]
        found_similarities, found = knn.search(np.asarray(oof), gallery, depth)
        similarities[rows, : found.shape[1]], indices[rows, : found.shape[1]] = found_similarities, gallery_rows[found]
    truth = identify_truth(labels, fold_of_row)
    covered = fold_of_row >= 0
    return OOFNeighbors(
        train[config.columns.id].to_numpy(dtype=str)[covered], labels, fold_of_row[covered],
        similarities[covered], indices[covered], "fold", truth[covered],
    )


def identify_truth(labels: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Return each row's OOF truth: its label, or NEW_INDIVIDUAL when no other fold holds that label.

    A validation fold searches the gallery of every other row, so its row's individual is known there exactly
    when the label occurs in some other fold (rows of fold -1, not validated, belong to every gallery).
    """
    folds_per_label = pd.Series(folds).groupby(np.asarray(labels)).transform("nunique").to_numpy()
    return np.where(folds_per_label > 1, labels, NEW_INDIVIDUAL)


def all_rows_matrix(config, model, train, rows_of_fold, folds_data):
    """Return one matrix of every training row: OOF embeddings, or TF-IDF refitted on all rows."""
    if model.kind == "tfidf":
        from compkit.models.tfidf import fit_transform

        texts = train[config.columns.text].astype(str).tolist()
        return fit_transform(model, texts, texts)[0]
    width = np.asarray(folds_data[0][1]).shape[1]
    matrix = np.zeros((len(train), width), dtype=np.float32)
    for rows, (_, oof, _) in zip(rows_of_fold, folds_data, strict=True):
        matrix[rows] = oof
    return matrix


def search_blended(matrix, depth: int, *, stages: int, threshold: float):
    """Return the set's neighbours within itself, after `stages` rounds of neighbourhood blending."""
    return blend_and_search(matrix, depth, stages=stages, threshold=threshold)[1:]


def blend_and_search(matrix, depth: int, *, stages: int, threshold: float):
    """Return (blended matrix, similarities, indices): the set's neighbours within itself after blending."""
    from compkit.postprocess.rules import blend_embeddings

    depth = min(depth, matrix.shape[0])
    similarities, indices = _searcher(matrix)(matrix, matrix, depth)
    for _ in range(stages):
        matrix = blend_embeddings(matrix, similarities, indices, threshold)
        similarities, indices = _searcher(matrix)(matrix, matrix, depth)
    return matrix, similarities, indices


def _searcher(matrix):
    import scipy.sparse as sp

    from compkit.neighbors import get_backend
    from compkit.neighbors.sparse import get_sparse_backend

    backend = get_sparse_backend("auto") if sp.issparse(matrix) else get_backend("auto")
    return backend.search


def _reindex(indices: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Return neighbour indices renumbered to the covered rows only (-1 stays -1)."""
    new_position = np.cumsum(covered) - 1
    return np.where(indices >= 0, new_position[np.clip(indices, 0, None)], -1)
