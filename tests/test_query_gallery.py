"""identify: confident queries join the gallery as their predicted individual for a second search, tuned on OOF."""

from __future__ import annotations

import re

import numpy as np
import pytest
from test_cli_pipeline import tiny_competition
from test_fusion import ARCFACE_ONLY, unit

from compkit.config import load_config
from compkit.neighbors import get_backend
from compkit.postprocess.query_gallery import (
    GALLERY_THRESHOLD,
    PEER_DEPTH,
    confident_labels,
    peers_without_self,
    with_query_gallery,
)
from compkit.postprocess.top5 import NO_LABEL, neighbour_top5


def test_peers_leave_each_query_out_of_its_own_list_even_behind_a_duplicate():
    similarities = np.array([[1.0, 1.0, 0.5], [1.0, 1.0, 0.4], [0.9, 0.5, 0.4]], dtype=np.float32)
    indices = np.array([[1, 0, 2], [1, 0, 2], [2, 0, 1]])  # query 0's duplicate (1) ranked before itself
    peer_similarities, peer_indices = peers_without_self(similarities, indices, depth=2)
    assert peer_indices.tolist() == [[1, 2], [0, 2], [0, 1]]
    assert np.allclose(peer_similarities, [[1.0, 0.5], [1.0, 0.4], [0.5, 0.4]])
    short_similarities, short_indices = peers_without_self(similarities[:, :2], indices[:, :2], depth=3)
    assert short_indices.tolist() == [[1, -1, -1], [0, -1, -1], [0, -1, -1]]
    assert np.isinf(short_similarities[:, 1:]).all()


def test_query_gallery_equals_searching_again_with_the_confident_queries_added_to_the_gallery():
    rng = np.random.default_rng(3)
    centres = unit(rng.normal(size=(12, 16)))
    gallery_labels = np.repeat(np.arange(12), 2)
    gallery = unit(centres[gallery_labels] + 0.6 * rng.normal(size=(24, 16)))
    query_truth = rng.integers(0, 12, size=40)
    queries = unit(centres[query_truth] + 0.6 * rng.normal(size=(40, 16)))
    knn = get_backend("torch")
    labels, scores = neighbour_top5(*knn.search(queries, gallery, len(gallery)), gallery_labels)
    peers = peers_without_self(*knn.search(queries, queries, PEER_DEPTH + 1))
    threshold = float(np.quantile(scores[:, 0], 0.5))

    got_labels, got_scores = with_query_gallery(labels, scores, *peers, threshold)

    joined = confident_labels(labels, scores, threshold)
    assert 0 < (joined != NO_LABEL).sum() < len(queries)
    for query in range(len(queries)):  # the gallery plus every confident query but itself, searched exactly
        others = np.flatnonzero((joined != NO_LABEL) & (np.arange(len(queries)) != query))
        reference = np.concatenate([gallery, queries[others]])
        reference_labels = np.concatenate([gallery_labels, joined[others]])
        expected = neighbour_top5(*knn.search(queries[query:query + 1], reference, len(reference)), reference_labels)
        assert got_labels[query].tolist() == expected[0][0].tolist()
        assert got_scores[query] == pytest.approx(expected[1][0], abs=1e-5)


def test_a_threshold_no_score_passes_leaves_every_answer_as_it_was():
    labels = np.array([[3, 1, NO_LABEL, NO_LABEL, NO_LABEL], [2, 0, 1, NO_LABEL, NO_LABEL]])
    scores = np.array([[0.9, 0.5, -np.inf, -np.inf, -np.inf], [0.7, 0.6, 0.2, -np.inf, -np.inf]], dtype=np.float32)
    peers = (np.array([[0.95], [0.95]], dtype=np.float32), np.array([[1], [0]]))
    same_labels, same_scores = with_query_gallery(labels, scores, *peers, 1.0)
    assert same_labels.tolist() == labels.tolist() and np.array_equal(same_scores, scores)
    moved, moved_scores = with_query_gallery(labels, scores, *peers, 0.8)  # only query 0 (0.9) joins
    assert moved.tolist() == [labels[0].tolist(), [3, 2, 0, 1, NO_LABEL]]
    assert moved_scores[1, :4] == pytest.approx([0.95, 0.7, 0.6, 0.2])


def test_an_identify_model_tunes_the_query_gallery_on_oof_and_predicts_test_with_it(tmp_path):
    from compkit.pipeline import run_pipeline
    from compkit.predict import predict_model
    from compkit.retrieval.single import oof_neighbors
    from compkit.tuning.objectives import evaluator
    from compkit.tuning.study import read_tuned
    from compkit.workspace import Workspace

    folder = tiny_competition(tmp_path, "demo-identify")
    toml = folder / "competition.toml"
    text = re.sub(r"\[\[models\]\].*?(?=\n\[postprocess\])", "", toml.read_text(), flags=re.S)
    toml.write_text(text.replace("[postprocess]", ARCFACE_ONLY + "\n[postprocess]\ntest_in_gallery = true"))
    config = load_config(str(folder))
    workspace = Workspace.for_competition(config.slug, tmp_path / "work")

    report = run_pipeline(config, workspace, trials=16, device="cpu")

    model = config.model("arc")
    neighbors = oof_neighbors(config, model, workspace)
    assert neighbors.peer_indices.shape == (len(neighbors.ids), PEER_DEPTH)
    own_fold = neighbors.folds[:, None] == neighbors.folds[np.clip(neighbors.peer_indices, 0, None)]
    assert own_fold[neighbors.peer_indices >= 0].all()  # an OOF query's peers are its own fold's queries
    tuned = read_tuned(config, model, workspace)
    assert GALLERY_THRESHOLD in tuned.params
    score_at = evaluator(config, neighbors)
    assert score_at(tuned.params) == pytest.approx(report.oof_scores["arc"], abs=1e-6)
    off = {key: value for key, value in tuned.params.items() if key != GALLERY_THRESHOLD}
    assert score_at({**off, GALLERY_THRESHOLD: 1.0}) == pytest.approx(score_at(off))  # nobody joins: no change
    assert report.test_scores["arc"] is not None
    assert predict_model(config, workspace, model).skipped


PSEUDO_LABELLED = ARCFACE_ONLY + ARCFACE_ONLY.replace('name = "arc"', 'name = "arc-pl"') + \
    'pseudo_label = { source = "arc", threshold = -1.0 }\n'


def test_a_pseudo_labelled_round_trains_on_confident_test_rows_after_its_source_predicted(tmp_path):
    import pandas as pd

    from compkit.pipeline import run_pipeline
    from compkit.stages import pipeline_stages
    from compkit.training.pseudo import TOP1_LABEL, TOP1_SCORE
    from compkit.training.rows import fold_rows, model_fold_inputs, training_fold_rows
    from compkit.workspace import Workspace, file_sha256

    folder = tiny_competition(tmp_path, "demo-identify")
    toml = folder / "competition.toml"
    text = re.sub(r"\[\[models\]\].*?(?=\n\[postprocess\])", "", toml.read_text(), flags=re.S)
    toml.write_text(text.replace("[postprocess]", PSEUDO_LABELLED + "\n[postprocess]"))
    config = load_config(str(folder))
    workspace = Workspace.for_competition(config.slug, tmp_path / "work")
    names = [stage.name for stage in pipeline_stages(config, workspace)]
    assert names.index("predict arc") < names.index("train arc-pl")  # the round reads arc's test predictions

    report = run_pipeline(config, workspace, trials=8, device="cpu")

    assert report.test_scores["arc-pl"] is not None
    top1 = pd.read_csv(workspace.top1_csv("arc"), dtype=str, keep_default_na=False)
    assert {TOP1_LABEL, TOP1_SCORE} <= set(top1.columns)
    model = config.model("arc-pl")
    for fold in workspace.fold_range():
        plain, rows = fold_rows(config, workspace, fold), training_fold_rows(config, workspace, model, fold)
        assert rows.valid.tolist() == plain.valid.tolist() and rows.n_classes == plain.n_classes
        added = rows.train[len(plain.train):]
        assert len(added) > 0 and (rows.fold_of_row[added] == -1).all()
        fold_classes = set(plain.classes)
        expected = top1[top1[TOP1_LABEL].isin(fold_classes)]  # threshold -1: every row naming a trained class
        assert len(added) == len(expected)
        assert set(rows.classes[rows.train_labels[len(plain.train):]]) <= fold_classes
        inputs = model_fold_inputs(config, model, fold, workspace)
        assert inputs["pseudo_label"] == {"source": "arc", "sha256": file_sha256(workspace.top1_csv("arc")),
                                          "threshold": -1.0}
        assert "pseudo_label" not in model_fold_inputs(config, config.model("arc"), fold, workspace)
    stricter = load_config(str(folder), overrides=['models.arc-pl.pseudo_label.threshold=0.99'])
    states = {stage.name: stage.judge()[0] for stage in pipeline_stages(stricter, workspace)}
    assert states["train arc"] == "fresh" and states["train arc-pl"] == "stale"


def test_pseudo_label_settings_are_checked_and_absent_ones_leave_fingerprints_as_they_were():
    from compkit.errors import ConfigError
    from compkit.training.rows import model_inputs

    with pytest.raises(ConfigError, match="pseudo_label needs task = 'identify'"):
        load_config("demo-match", overrides=['models.convnext-64.pseudo_label={source="convnext-64"}'])
    with pytest.raises(ConfigError, match=r"threshold must be in \[-1, 1\]"):
        load_config("demo-identify", overrides=['models.resnet-48.pseudo_label={source="resnet-48", threshold=2.0}'])
    config = load_config("demo-identify", overrides=['models.resnet-48.pseudo_label={source="lite0-subcenter"}'])
    assert model_inputs(config.model("resnet-48"))["pseudo_label"] == {"source": "lite0-subcenter", "threshold": 0.7}
    assert "pseudo_label" not in model_inputs(config.model("lite0-subcenter"))
    with pytest.raises(ConfigError, match="gallery_threshold"):
        load_config("demo-identify", overrides=["postprocess.gallery_threshold=[0.5, 1.5]"])
