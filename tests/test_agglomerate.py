"""Agglomerative merging to a target mean cluster size, singletons attached (compkit.postprocess.clusters)."""

import numpy as np
import pytest

from compkit.config import load_config
from compkit.errors import ConfigError
from compkit.metrics import row_f1
from compkit.postprocess.clusters import ClusterMatches, cluster_lists, merge_hierarchy
from compkit.predict import predict_model
from compkit.scoring import score_submission
from compkit.tuning.study import tune_model
from compkit.workspace import Workspace


def grouped_lists(seed: int, *, n_groups: int = 60, noise: float = 0.9, k: int = 20):
    """Return (labels, similarities, indices): the top-k cosine lists of rows scattered around group centres."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_groups), rng.integers(2, 6, n_groups))
    embeddings = rng.normal(size=(n_groups, 16))[labels] + rng.normal(scale=noise, size=(len(labels), 16))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarities = embeddings @ embeddings.T
    indices = np.argsort(-similarities, axis=1, kind="stable")[:, :k]
    return labels, np.take_along_axis(similarities, indices, axis=1).astype(np.float32), indices


def test_cluster_f1_equals_the_row_f1_of_the_cluster_lists_predict_writes():
    labels, similarities, indices = grouped_lists(0)
    clusters = ClusterMatches(similarities, indices, max_size=50)
    for params in ({"cluster_size": 1.0}, {"cluster_size": 2.5}, {"cluster_size": 3.7, "attach_threshold": 0.3},
                   {"cluster_size": 6.0, "attach_threshold": -1.0}):
        indptr, matches = clusters.keep_lists(params)
        assert clusters.row_f1(params, labels) == pytest.approx(row_f1(labels, indptr, matches), abs=1e-12)
        assert (matches[indptr[:-1]] == np.arange(len(labels))).all()  # each row lists itself first


def test_well_separated_pairs_are_found_exactly_at_mean_size_two():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(50, 16))
    embeddings = centres[np.repeat(np.arange(50), 2)] + rng.normal(scale=0.05, size=(100, 16))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    all_similarities = embeddings @ embeddings.T
    indices = np.argsort(-all_similarities, axis=1, kind="stable")[:, :10]
    similarities = np.take_along_axis(all_similarities, indices, axis=1).astype(np.float32)
    clusters = ClusterMatches(similarities, indices, max_size=50)
    pairs = np.repeat(np.arange(50), 2)
    assert clusters.row_f1({"cluster_size": 2.0}, pairs).mean() == 1.0
    assert clusters.row_f1({"cluster_size": 1.0}, pairs).mean() == pytest.approx(2 / 3)  # nothing merged


def test_the_first_round_pairs_every_posting_with_its_mutual_nearest_one():
    _, similarities, indices = grouped_lists(2, noise=1.5)
    hierarchy = merge_hierarchy(similarities, indices, max_size=50)
    nearest = indices[:, 1]  # the lists are sorted: column 0 is the row itself
    rows = np.arange(len(indices))
    mutual = rows[(nearest[nearest] == rows) & (rows < nearest)]
    cluster_ids = hierarchy.labels(len(rows) / (len(rows) - len(mutual)))
    assert (cluster_ids[mutual] == cluster_ids[nearest[mutual]]).all()
    assert np.bincount(cluster_ids).max() == 2


def test_a_cut_reaches_the_target_mean_size():
    labels, similarities, indices = grouped_lists(2)
    hierarchy = merge_hierarchy(similarities, indices, max_size=50)
    for target in (1.5, 2.0, 3.0):
        cluster_ids = hierarchy.labels(target)
        assert len(labels) / len(np.unique(cluster_ids)) == pytest.approx(target, rel=0.02)


def test_no_cluster_outgrows_max_size_even_with_every_singleton_attached():
    labels, similarities, indices = grouped_lists(3, noise=3.0)
    clusters = ClusterMatches(similarities, indices, max_size=4)
    cluster_ids = clusters.labels({"cluster_size": 50.0, "attach_threshold": -1.0})
    assert np.bincount(cluster_ids).max() <= 4


def test_a_singleton_joins_the_cluster_of_its_nearest_other_posting_above_the_attach_threshold():
    # rows 0-1 and 2-3 pair up; row 4 is nearest to row 2 (0.6), which the cut leaves in the 2-3 cluster
    indices = np.array([[0, 1, 4], [1, 0, 2], [2, 3, 4], [3, 2, 4], [4, 2, 0]])
    similarities = np.array([[1, .9, .1], [1, .9, .2], [1, .95, .6], [1, .95, .5], [1, .6, .1]], np.float32)
    clusters = ClusterMatches(similarities, indices, max_size=50)
    assert cluster_lists(clusters.labels({"cluster_size": 5 / 3}))[1].tolist() == [0, 1, 1, 0, 2, 3, 3, 2, 4]
    attached = clusters.labels({"cluster_size": 5 / 3, "attach_threshold": 0.55})
    assert attached[4] == attached[2] == attached[3] != attached[0]
    assert clusters.labels({"cluster_size": 5 / 3, "attach_threshold": 0.7})[4] not in attached[:4]


def test_agglomeration_is_tuned_on_oof_and_predicted_as_tuned(tuned_workspace):
    folder, base = tuned_workspace
    config = load_config(str(folder), overrides=["postprocess.agglomerate=true"])
    workspace = Workspace.for_competition(config.slug, base)
    model = config.model("tfidf-word")
    result = tune_model(config, workspace, model, trials=15)
    assert "cluster_size" in result.params and set(result.params) <= {"cluster_size", "attach_threshold"}
    assert result.default_score > 0  # the training groups' mean size
    predicted = predict_model(config, workspace, model)
    oof = score_submission(config, workspace, predicted.oof, solution_path=oof_solution(config, workspace))
    assert oof.score == pytest.approx(result.oof_score, abs=1e-9)
    assert 0.0 < score_submission(config, workspace, predicted.submission).score <= 1.0


def test_a_cluster_size_range_outside_one_to_max_matches_is_refused(tuned_workspace):
    folder, _ = tuned_workspace
    with pytest.raises(ConfigError, match="cluster_size"):
        load_config(str(folder), overrides=["postprocess.cluster_size=[0.5, 4]"])


def oof_solution(config, workspace):
    from compkit.data.tables import load_train

    path = workspace.root / "oof-solution.csv"
    load_train(config, workspace)[[config.columns.id, config.columns.label]].to_csv(path, index=False)
    return path
