"""`compkit predict`: a model's test CSV with its tuned parameters, and the same post-processing on OOF data.

Both model families are predicted here: a single model searches its test embeddings (match: within the test
set, after blending; identify: against the training gallery), a combined model merges its members' searches
into a candidate table; each then gets the post-processing its tuned parameters say, on test and on OOF.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from compkit.config import COMBINED_KINDS, CombinedModel, CompetitionConfig, ModelConfig
from compkit.data.tables import load_test, load_train
from compkit.embeddings.cache import (
    combined_gallery_embeddings,
    combined_test_embeddings,
    load_centres,
    load_fold_embeddings,
)
from compkit.metrics import label_sizes
from compkit.postprocess.combined import CandidateTable, UnionMatches, weighted_lists
from compkit.postprocess.new_individual import training_label_species
from compkit.postprocess.query_gallery import GALLERY_THRESHOLD, PEER_DEPTH, gallery_top5, peers_without_self
from compkit.postprocess.submission_rows import identify_rows, match_rows, match_rows_kept
from compkit.postprocess.top5 import neighbour_top5
from compkit.retrieval.combined import oof_candidates, test_candidates
from compkit.retrieval.expansion import search_expanded
from compkit.retrieval.head_scores import KNN_WEIGHT, centre_rows, fused_lists, head_similarities
from compkit.retrieval.layout import search_depth
from compkit.retrieval.search import search
from compkit.retrieval.single import oof_neighbors
from compkit.training.pseudo import top1_frame
from compkit.tuning.combined import combined_weights, top5_ranker
from compkit.tuning.study import read_tuned
from compkit.tuning.tuned import TunedModel
from compkit.workspace import Workspace, file_sha256, is_fresh, read_manifest, write_csv, write_manifest


@dataclass(frozen=True)
class PredictResult:
    model: str
    submission: Path
    oof: Path
    test_rows: int
    oof_rows: int
    skipped: bool = False  # both CSVs were fresh and were kept


def predict_model(
    config: CompetitionConfig, workspace: Workspace, model: ModelConfig, *, force: bool = False
) -> PredictResult:
    """Write submissions/<model>.csv and oof/<model>.csv with the model's tuned post-processing.

    Both are kept when they were predicted from the tuned parameters as they are now, unless `force`.
    """
    tuned = read_tuned(config, model, workspace)
    paths = workspace.submission_csv(model.name), workspace.oof_csv(model.name)
    top1_path = workspace.top1_csv(model.name) if config.task == "identify" else None
    made = (*paths, top1_path) if top1_path else paths
    if not force and all(is_fresh(path, prediction_inputs(workspace, model.name)) for path in made):
        rows = [(read_manifest(path) or {}).get("rows", 0) for path in paths]
        return PredictResult(model.name, *paths, *rows, skipped=True)
    test_ids = load_test(config, workspace)[config.columns.id].to_numpy(dtype=str)
    if model.kind in COMBINED_KINDS:
        submission, oof, top1 = combined_predictions(config, workspace, model, tuned, test_ids)
    else:
        submission, oof, top1 = single_predictions(config, workspace, model, tuned, test_ids)
    inputs = prediction_inputs(workspace, model.name)
    written = [(workspace.submission_csv(model.name), submission), (workspace.oof_csv(model.name), oof)]
    for path, frame in [*written, *([(top1_path, top1)] if top1_path else [])]:
        write_csv(path, frame)
        write_manifest(path, inputs, rows=len(frame))
    return PredictResult(model.name, workspace.submission_csv(model.name), workspace.oof_csv(model.name),
                         len(submission), len(oof))


def single_predictions(
    config: CompetitionConfig, workspace: Workspace, model: ModelConfig, tuned: TunedModel, test_ids: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """Return the (test, OOF) submission frames of a single model with its tuned parameters, and (identify) each
    test image's top-1 individual and score, what a pseudo-labelling round reads."""
    params, backend = tuned.params, config.neighbors
    folds = workspace.fold_range()
    test_vectors = combined_test_embeddings(config, model, workspace, folds)
    neighbors = oof_neighbors(config, model, workspace, candidates=tuned.candidates)
    if config.task == "match":
        space = config.postprocess
        similarities, indices = search_expanded(test_vectors, search_depth(config), space=space, backend=backend)
        sizes = label_sizes(neighbors.labels)  # group-size calibration's target, as tuning had it
        submission = match_rows(config, test_ids, similarities, indices, params, train_sizes=sizes)
        oof = match_rows(config, neighbors.ids, neighbors.similarities, neighbors.indices, params, train_sizes=sizes)
        top1 = None
    else:
        codes, classes = training_label_codes(config, workspace)
        species = training_label_species(config, workspace)
        gallery = combined_gallery_embeddings(config, model, workspace, folds)
        test_lists = search(test_vectors, gallery, search_depth(config), backend=backend)
        oof_lists = neighbors.similarities, neighbors.indices
        weight = params.get(KNN_WEIGHT, 1.0)
        if weight != 1.0 and neighbors.head_similarities is not None:
            test_head = test_head_similarities(config, model, workspace, folds, test_lists[1], codes, classes)
            test_lists = fused_lists(*test_lists, test_head, weight)
            oof_lists = fused_lists(*oof_lists, neighbors.head_similarities, weight)
        test_peers = test_query_peers(test_vectors, backend) if GALLERY_THRESHOLD in params else None
        test_top5 = gallery_top5(*neighbour_top5(*test_lists, codes), test_peers, params)
        oof_top5 = gallery_top5(*neighbour_top5(*oof_lists, codes), neighbors.peers, params)
        submission = identify_rows(config, test_ids, *test_top5, classes, params, species)
        oof = identify_rows(config, neighbors.ids, *oof_top5, classes, params, species)
        top1 = test_top1(config, test_ids, *test_top5, classes)
    return submission, oof, top1


def test_top1(config: CompetitionConfig, test_ids: np.ndarray, labels: np.ndarray, scores: np.ndarray,
              classes: np.ndarray) -> pd.DataFrame:
    """Return each test image's top-ranked individual (by label code) and its score, "" / -inf where none."""
    names = np.where(labels[:, 0] >= 0, classes[np.clip(labels[:, 0], 0, None)], "")
    return top1_frame(config, test_ids, names, scores[:, 0])


def test_query_peers(test_vectors, backend: str) -> tuple[np.ndarray, np.ndarray]:
    """Return each test image's nearest other test images: the confident ones join its gallery."""
    return peers_without_self(*search(test_vectors, test_vectors, PEER_DEPTH + 1, backend=backend))


def combined_predictions(
    config: CompetitionConfig, workspace: Workspace, model: CombinedModel, tuned: TunedModel, test_ids: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """Return the (test, OOF) submission frames of a combined model with its tuned parameters, and (identify)
    each test image's top-1 individual and score."""
    params = tuned.params
    oof = oof_candidates(config, model, workspace, candidates=tuned.candidates)
    test = test_candidates(config, model, workspace)
    max_matches, depth = config.postprocess.max_matches, search_depth(config)
    weights = None if model.kind == "union" else combined_weights(model, params)
    if model.kind == "union":
        def rows(ids, table: CandidateTable) -> pd.DataFrame:
            keep = UnionMatches(table, model.members, max_matches=max_matches).keep(params)
            return match_rows_kept(config, ids, table.indices, keep)
    elif config.task == "match":
        def rows(ids, table: CandidateTable) -> pd.DataFrame:
            return match_rows(config, ids, *weighted_lists(table, weights, depth), params,
                              train_sizes=label_sizes(oof.labels))
    else:
        codes, classes = training_label_codes(config, workspace)
        species = training_label_species(config, workspace)

        def rows(ids, table: CandidateTable) -> pd.DataFrame:
            labels, scores = top5_ranker(config, model, table, codes)(weights)
            return identify_rows(config, ids, labels, scores, classes, params, species)
    top1 = None
    if config.task == "identify":
        top1 = test_top1(config, test_ids, *top5_ranker(config, model, test, codes)(weights), classes)
    return rows(test_ids, test), rows(oof.ids, oof.table), top1


def test_head_similarities(config, model, workspace: Workspace, folds: list[int], indices: np.ndarray,
                           codes: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Return each test neighbour's individual's head score: the mean over the fold models that hold it."""
    neighbour_codes = np.where(indices >= 0, codes[np.clip(indices, 0, None)], -1)
    total = np.zeros(indices.shape, dtype=np.float32)
    count = np.zeros(indices.shape, dtype=np.int32)
    for fold in folds:
        labels, centres = load_centres(config, model, fold, workspace)
        queries = np.asarray(load_fold_embeddings(config, model, fold, workspace)[2], dtype=np.float32)
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        scores = head_similarities(queries, neighbour_codes, centres, centre_rows(labels, classes))
        total += np.nan_to_num(scores)
        count += ~np.isnan(scores)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)


def training_label_codes(config: CompetitionConfig, workspace: Workspace) -> tuple[np.ndarray, np.ndarray]:
    """Return (code of each training row's label, label of each code), as the OOF neighbour lists number them."""
    codes, classes = pd.factorize(load_train(config, workspace)[config.columns.label].to_numpy(dtype=str))
    return codes, np.asarray(classes)


def prediction_inputs(workspace: Workspace, model_name: str) -> dict:
    """Return what a model's test and OOF CSVs are made from: its tuned parameters file (by hash)."""
    return {"tuned": file_sha256(workspace.tuned_params(model_name)), "model": model_name}
