"""`compkit predict`: a model's test CSV with its tuned parameters, and the same post-processing on OOF data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from compkit.config import COMBINED_KINDS, CompetitionConfig, ModelConfig
from compkit.data.tables import load_test, load_train
from compkit.embeddings.cache import combined_gallery_embeddings, combined_test_embeddings
from compkit.metrics import PAD_ID
from compkit.postprocess.new_individual import LabelSpecies, query_thresholds, training_label_species
from compkit.postprocess.rules import NO_LABEL, insert_new_individual, match_mask, top_labels
from compkit.retrieval.single import NEW_INDIVIDUAL, oof_neighbors, search_blended, search_depth
from compkit.submission import format_identify_rows, format_match_rows
from compkit.tuning.study import read_tuned
from compkit.workspace import Workspace, file_sha256, write_csv, write_manifest


@dataclass(frozen=True)
class PredictResult:
    model: str
    submission: Path
    oof: Path
    test_rows: int
    oof_rows: int


def predict_model(config: CompetitionConfig, workspace: Workspace, model: ModelConfig) -> PredictResult:
    """Write submissions/<model>.csv and oof/<model>.csv with the model's tuned post-processing."""
    tuned = read_tuned(config, model, workspace)
    test_ids = load_test(config, workspace)[config.columns.id].to_numpy(dtype=str)
    if model.kind in COMBINED_KINDS:
        from compkit.tuning.combined import combined_predictions

        submission, oof = combined_predictions(config, workspace, model, tuned, test_ids)
    else:
        submission, oof = _model_predictions(config, workspace, model, tuned, test_ids)
    inputs = prediction_inputs(workspace, model.name)
    for path, frame in ((workspace.submission_csv(model.name), submission), (workspace.oof_csv(model.name), oof)):
        write_csv(path, frame)
        write_manifest(path, inputs, rows=len(frame))
    return PredictResult(model.name, workspace.submission_csv(model.name), workspace.oof_csv(model.name),
                         len(submission), len(oof))


def _model_predictions(config, workspace, model, tuned: dict, test_ids) -> tuple[pd.DataFrame, pd.DataFrame]:
    params = tuned["params"]
    folds = list(range(config.folds.n_splits))
    test_vectors = combined_test_embeddings(config, model, workspace, folds)
    neighbors = oof_neighbors(config, model, workspace, candidates=tuned["candidates"])
    if config.task == "match":
        space = config.postprocess
        similarities, indices = search_blended(test_vectors, search_depth(config), stages=space.blend_stages,
                                               threshold=space.blend_threshold)
        submission = match_rows(config, test_ids, similarities, indices, params)
        oof = match_rows(config, neighbors.ids, neighbors.similarities, neighbors.indices, params)
    else:
        codes, classes = training_label_codes(config, workspace)
        species = training_label_species(config, workspace)
        gallery = combined_gallery_embeddings(config, model, workspace, folds)
        similarities, indices = _search(test_vectors, gallery, min(search_depth(config), len(gallery)))
        submission = _identify_rows(config, test_ids, similarities, indices, codes, classes, params, species)
        oof = _identify_rows(config, neighbors.ids, neighbors.similarities, neighbors.indices, codes, classes,
                             params, species)
    return submission, oof


def training_label_codes(config: CompetitionConfig, workspace: Workspace) -> tuple[np.ndarray, np.ndarray]:
    """Return (code of each training row's label, label of each code), as the OOF neighbour lists number them."""
    codes, classes = pd.factorize(load_train(config, workspace)[config.columns.label].to_numpy(dtype=str))
    return codes, np.asarray(classes)


def prediction_inputs(workspace: Workspace, model_name: str) -> dict:
    """Return what a model's test and OOF CSVs are made from: its tuned parameters file (by hash)."""
    return {"tuned": file_sha256(workspace.tuned_params(model_name)), "model": model_name}


def _search(query, reference, depth: int):
    import scipy.sparse as sp

    from compkit.neighbors import get_backend
    from compkit.neighbors.sparse import get_sparse_backend

    backend = get_sparse_backend("auto") if sp.issparse(reference) else get_backend("auto")
    return backend.search(query, reference, depth)


def match_rows(config, ids, similarities, indices, params: dict) -> pd.DataFrame:
    """Return the submission rows of neighbour lists thresholded (and min2-completed) as `params` say."""
    keep = match_mask(similarities, indices, params["threshold"], max_matches=config.postprocess.max_matches,
                      min2_threshold=params.get("min2_threshold"))
    return match_rows_kept(config, ids, indices, keep)


def _identify_rows(config, ids, similarities, indices, label_codes, classes, params: dict, species) -> pd.DataFrame:
    valid = indices >= 0
    neighbour_labels = np.where(valid, label_codes[np.clip(indices, 0, None)], NO_LABEL)
    labels, scores = top_labels(similarities, neighbour_labels, 5)
    return identify_rows(config, ids, labels, scores, classes, params, species)


def match_rows_kept(config, ids, indices: np.ndarray, keep: np.ndarray) -> pd.DataFrame:
    """Return the submission rows of the neighbours `keep` marks."""
    indptr = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(keep.sum(axis=1), out=indptr[1:])
    return format_match_rows(ids, indptr, indices[keep], config=config)


def identify_rows(config, ids, labels, scores, classes, params: dict, species: LabelSpecies | None) -> pd.DataFrame:
    """Return the submission rows of top-5 label codes and scores, new_individual inserted as `params` say."""
    thresholds = query_thresholds(params, labels, scores, species)
    codes = insert_new_individual(labels, scores, thresholds, NEW_INDIVIDUAL)
    names = np.where(codes >= 0, classes[np.clip(codes, 0, None)], PAD_ID).astype(object)
    names[codes == NEW_INDIVIDUAL] = config.submission.new_individual
    return format_identify_rows(ids, names, config=config)
