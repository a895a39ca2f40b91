"""Tuning says when a best value lies at the edge of its search range, and plots every tuned parameter."""

from __future__ import annotations

import re
import warnings

import pytest
from test_training import tiny_match

from compkit.config import load_config
from compkit.data.fetch import fetch_competition
from compkit.data.folds import build_folds
from compkit.embeddings.runner import run_models
from compkit.tuning.problem import TuningProblem, edge_warnings, score_figure, search_ranges
from compkit.tuning.study import tune_model
from compkit.workspace import Workspace


def problem_of(evaluate) -> TuningProblem:
    return TuningProblem(evaluate, lambda trial: {}, {"threshold": 0.5}, "all", "threshold", (0.2, 0.95))


def test_a_best_value_at_an_edge_with_the_score_still_rising_is_reported_naming_the_setting():
    rising = problem_of(lambda params: params["threshold"] - abs(params["knn_weight"] - 0.5))
    ranges = {"threshold": (0.2, 0.95), "knn_weight": (0.0, 1.0)}
    [message] = edge_warnings(rising, {"threshold": 0.947, "knn_weight": 0.5}, ranges)
    assert message.startswith("threshold = 0.947 lies at the upper edge of its search range [0.2, 0.95]")
    assert message.endswith("widen postprocess.threshold")
    assert re.search(r"rises towards it \(0\.9125 at 0\.912, 0\.9500 at 0\.95\)", message)
    assert edge_warnings(rising, {"threshold": 0.6, "knn_weight": 0.5}, ranges) == []  # inside the range
    peaked = problem_of(lambda params: -abs(params["threshold"] - 0.9))  # falls again before the edge
    assert edge_warnings(peaked, {"threshold": 0.94, "knn_weight": 0.5}, ranges) == []


def test_natural_limits_and_members_thresholds():
    problem = problem_of(lambda params: params.get("knn_weight", 0) + params.get("threshold:tfidf", 0))
    ranges = {"knn_weight": (0.0, 1.0), "threshold:tfidf": (0.2, 0.95)}
    # r = 1 is pure kNN, no range could go beyond it; a member's threshold is postprocess.threshold's
    [message] = edge_warnings(problem, {"knn_weight": 1.0, "threshold:tfidf": 0.95}, ranges)
    assert message.startswith("threshold:tfidf = 0.950 lies at the upper edge") and "postprocess.threshold" in message


def test_search_ranges_are_the_configs_for_every_tuned_parameter():
    config = load_config("demo-match")
    space = config.postprocess
    ranges = search_ranges(space, ["threshold", "min2_threshold", "weight:a", "threshold:b", "unknown"])
    assert ranges == {"threshold": space.threshold, "min2_threshold": space.min2_threshold,
                      "weight:a": (0.0, 1.0), "threshold:b": space.threshold}


@pytest.fixture
def embedded(tmp_path):
    folder = tiny_match(tmp_path)
    toml = folder / "competition.toml"
    # a range that stops short of the best threshold of this data: the study ends at its upper edge
    text = re.sub(r"(?m)^threshold = \[.*\]$", "threshold = [0.05, 0.15]", toml.read_text())
    assert "threshold = [0.05, 0.15]" in text
    toml.write_text(text)
    config = load_config(str(folder))
    workspace = Workspace.for_competition(config.slug, tmp_path / "work")
    fetch_competition(config, workspace)
    build_folds(config, workspace)
    run_models(config, workspace, folds=[0, 1], models=["tfidf-word"])
    return config, workspace


def test_tuning_warns_when_its_best_threshold_is_at_the_edge_and_plots_every_parameter(embedded):
    config, workspace = embedded
    model = config.model("tfidf-word")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = tune_model(config, workspace, model, trials=15)
    edges = [str(w.message) for w in caught if "edge of its search range" in str(w.message)]
    assert any(message.startswith("threshold = ") and "[0.05, 0.15]" in message for message in edges), edges
    assert result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    from compkit.tuning.study import tuning_problem

    problem = tuning_problem(config, workspace, model, "all")
    ranges = search_ranges(config.postprocess, result.params)
    figure = score_figure(problem, result.params, ranges, oof_score=result.oof_score,
                          default_score=result.default_score, metric="mean row F1", title="t")
    visible = [axis for axis in figure.axes if axis.get_visible()]
    min2 = ["min2_threshold"] if "min2_threshold" in result.params else []  # demo-match lets the tuner choose min2
    assert [axis.get_xlabel() for axis in visible] == ["threshold", *min2]
    assert all(axis.get_ylabel() == "OOF mean row F1" for axis in visible)
    legends = [[text.get_text() for text in axis.get_legend().get_texts()] for axis in visible]
    assert all(f"default threshold 0.5: {result.default_score:.4f}" in labels for labels in legends)
    assert f"{result.default_score:.4f} at the default threshold 0.5" in figure.get_suptitle()


def test_the_best_trials_min2_switch_is_flipped_when_that_scores_higher():
    from compkit.config import load_config
    from compkit.tuning.problem import MIN2_GRID_POINTS, with_min2_polished

    config = load_config("demo-match")  # min2 allowed, min2_threshold in [0, 0.9]
    calls = []

    def evaluate(params):
        calls.append(params)
        if "min2_threshold" not in params:
            return 0.75
        return 0.8 if 0.2 <= params["min2_threshold"] <= 0.4 else 0.7

    off = {"threshold": 0.6, "min2": False}
    polished = with_min2_polished(config, off, evaluate)
    assert polished["min2"] is True and 0.2 <= polished["min2_threshold"] <= 0.4
    assert len(calls) == 1 + MIN2_GRID_POINTS and max(c.get("min2_threshold", 0) for c in calls) <= 0.6
    on = {"threshold": 0.6, "min2": True, "min2_threshold": 0.3}
    assert with_min2_polished(config, on, evaluate) is on  # turning it off scores lower: kept
    worse_on = {"threshold": 0.6, "min2": True, "min2_threshold": 0.8}
    assert with_min2_polished(config, worse_on, evaluate) == {"threshold": 0.6, "min2": False}
