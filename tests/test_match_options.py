"""The opt-in match post-processing: the mutual-neighbour filter and group-size calibration."""

import numpy as np
import pytest

from compkit.config import load_config
from compkit.metrics import label_sizes, row_f1
from compkit.postprocess.group_sizes import calibrated_keep, target_sizes
from compkit.postprocess.matches import match_mask
from compkit.postprocess.mutual import NOT_MUTUAL, mutual_filter, mutual_ranks
from compkit.predict import predict_model
from compkit.retrieval.single import OOFNeighbors
from compkit.scoring import score_submission
from compkit.tuning.objectives import OptionsMatchF1, match_evaluator
from compkit.tuning.study import tune_model
from compkit.workspace import Workspace


def neighbour_lists(seed: int, n_rows: int = 240, k: int = 20, *, ties: bool = True):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_rows // 3, size=n_rows)
    embeddings = rng.normal(size=(n_rows // 3, 8))[labels] + rng.normal(scale=0.9, size=(n_rows, 8))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarities = embeddings @ embeddings.T
    indices = np.argsort(-similarities, axis=1, kind="stable")[:, :k]
    similarities = np.take_along_axis(similarities, indices, axis=1).astype(np.float32)
    if ties:
        similarities = np.round(similarities, 2)
    return labels, similarities, indices


def kept_f1(labels, indices, keep):
    indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
    return row_f1(labels, indptr, indices[keep], assume_unique=True)


def test_mutual_ranks_equal_a_row_by_row_reading_of_the_lists():
    _, _, indices = neighbour_lists(0, n_rows=90, k=12)
    indices[::7, 5] = -1  # padding in the middle of a row
    got = mutual_ranks(indices)
    for row in range(len(indices)):
        others = [j for j in indices[row] if j >= 0 and j != row]
        for column, j in enumerate(indices[row]):
            if j == row:
                assert got[row, column] == -1
            elif j < 0:
                assert got[row, column] == NOT_MUTUAL
            else:
                theirs = [i for i in indices[j] if i >= 0 and i != j]
                expected = max(others.index(j), theirs.index(row)) if row in theirs else NOT_MUTUAL
                assert got[row, column] == expected


def test_mutual_filter_keeps_a_pair_only_when_each_is_within_the_others_top_r():
    # 0's nearest other is 1, 1's nearest other is 2, 2's nearest other is 1; 3 lists 0 but 0 does not list 3
    indices = np.array([[0, 1, 2], [1, 2, 0], [2, 1, 0], [3, 0, 2]])
    similarities = np.array([[1.0, 0.9, 0.8], [1.0, 0.95, 0.9], [1.0, 0.95, 0.8], [1.0, 0.7, 0.6]], np.float32)
    _, top1 = mutual_filter(similarities, indices, 1)
    assert top1.tolist() == [[0, -1, -1], [1, 2, -1], [2, 1, -1], [3, -1, -1]]
    _, top2 = mutual_filter(similarities, indices, 2)
    assert top2.tolist() == [[0, 1, 2], [1, 2, 0], [2, 1, 0], [3, -1, -1]]  # 0 is not within 3's reach back


def test_full_calibration_gives_the_training_distribution_of_group_sizes():
    labels, similarities, indices = neighbour_lists(1, k=30, ties=False)
    keep = match_mask(similarities, indices, 0.7)
    calibrated = calibrated_keep(similarities, indices, keep, label_sizes(labels), 1.0)
    assert np.sort(calibrated.sum(axis=1)).tolist() == np.sort(label_sizes(labels)).tolist()
    assert calibrated_keep(similarities, indices, keep, label_sizes(labels), 0.0).tolist() == keep.tolist()
    # test sets of another size get the training sizes by quantile
    assert target_sizes(4, np.array([2, 2, 3, 3, 3, 5, 5, 5, 5, 5])).tolist() == [2, 3, 5, 5]


@pytest.mark.parametrize("mutual", [False, True])
def test_the_options_objective_equals_filtering_masking_calibrating_then_row_f1(mutual):
    labels, similarities, indices = neighbour_lists(2)
    indices[::9, 4] = -1  # a dropped repeat, its similarity left in place
    neighbors = OOFNeighbors(np.arange(len(labels)).astype(str), labels, np.zeros(len(labels), np.int64),
                             similarities, indices, "fold")
    objective = OptionsMatchF1(neighbors, max_matches=50, mutual=mutual)
    rng = np.random.default_rng(5)
    for _ in range(40):
        params = {"threshold": float(rng.uniform(0.0, 1.05))}
        if rng.random() < 0.5:
            params["min2_threshold"] = float(rng.uniform(-0.2, params["threshold"]))
        if mutual:
            params["mutual_top"] = int(rng.integers(1, 8))
        if rng.random() < 0.7:
            params["group_size_weight"] = float(rng.uniform(0, 1))
        lists = (similarities, indices)
        if mutual:
            lists = mutual_filter(similarities, indices, params["mutual_top"])
        keep = match_mask(*lists, params["threshold"], min2_threshold=params.get("min2_threshold"))
        if "group_size_weight" in params:
            keep = calibrated_keep(*lists, keep, label_sizes(labels), params["group_size_weight"])
        expected = kept_f1(labels, lists[1], keep)
        np.testing.assert_allclose(objective.row_scores(params), expected, atol=1e-12)
        assert objective(params) == pytest.approx(expected.mean(), abs=1e-12)


def test_the_options_objective_without_options_is_the_plain_prefix_objective():
    labels, similarities, indices = neighbour_lists(3)
    neighbors = OOFNeighbors(np.arange(len(labels)).astype(str), labels, np.zeros(len(labels), np.int64),
                             similarities, indices, "fold")
    config = load_config("demo-match", overrides=["postprocess.calibrate_group_sizes=true"])
    plain = match_evaluator(neighbors, max_matches=50)
    options = match_evaluator(neighbors, max_matches=50, postprocess=config.postprocess)
    assert isinstance(options, OptionsMatchF1) and not isinstance(plain, OptionsMatchF1)
    for params in ({"threshold": 0.6}, {"threshold": 0.5, "min2_threshold": 0.3}):
        assert options(params) == pytest.approx(plain(params), abs=1e-12)


@pytest.mark.filterwarnings("ignore:.*is worse than the current one")
def test_both_options_are_tuned_on_oof_and_predicted_as_tuned(tuned_workspace):
    folder, base = tuned_workspace
    config = load_config(str(folder), overrides=["postprocess.mutual_top=[1,6]",
                                                 "postprocess.calibrate_group_sizes=true"])
    workspace = Workspace.for_competition(config.slug, base)
    model = config.model("tfidf-word")
    result = tune_model(config, workspace, model, trials=15)
    assert 1 <= result.params["mutual_top"] <= 6 and 0.0 <= result.params["group_size_weight"] <= 1.0
    predicted = predict_model(config, workspace, model)
    # the OOF CSV, post-processed by predict, scores what the study's objective said
    oof = score_submission(config, workspace, predicted.oof, solution_path=oof_solution(config, workspace))
    assert oof.score == pytest.approx(result.oof_score, abs=1e-9)
    assert 0.0 < score_submission(config, workspace, predicted.submission).score <= 1.0


def oof_solution(config, workspace):
    from compkit.data.tables import load_train

    path = workspace.root / "oof-solution.csv"
    load_train(config, workspace)[[config.columns.id, config.columns.label]].to_csv(path, index=False)
    return path


def test_a_mutual_range_below_one_is_refused_naming_the_key():
    from compkit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"mutual_top must be \[low, high\] with 1 <= low <= high, got \[0, 3\]"):
        load_config("demo-match", overrides=["postprocess.mutual_top=[0,3]"])
