"""Tuning never ends below the trivial answer (match: each posting matches only itself; identify: every image
new_individual), reports its OOF score beside the tuned one and warns when a model does not beat it."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import matcher_competition

from compkit.config import load_config
from compkit.data.fetch import fetch_competition
from compkit.data.folds import build_folds
from compkit.embeddings.runner import run_models
from compkit.metrics import label_sizes
from compkit.postprocess.new_individual import Top5Objective, new_individual_threshold
from compkit.postprocess.top5 import NEW_INDIVIDUAL, insert_new_individual
from compkit.predict import predict_model
from compkit.tuning.problem import SELF_ONLY_THRESHOLD, trivial_answer_score, trivial_params
from compkit.tuning.study import tune_model
from compkit.tuning.tuned import load_tuned
from compkit.workspace import Workspace


def noise_phash(tmp_path, overrides=()):
    """A tiny demo-match whose phash column is random: its images carry no signal."""
    folder = matcher_competition(tmp_path, "noise-match")
    config = load_config(str(folder), overrides=list(overrides))
    workspace = Workspace.for_competition(config.slug, tmp_path / "work")
    fetch_competition(config, workspace)
    train_path = workspace.data_dir / config.data.train
    train = pd.read_csv(train_path)
    random = np.random.default_rng(0).integers(0, 2**63, len(train))
    train[config.columns.phash] = [f"{value:016x}" for value in random]
    train.to_csv(train_path, index=False)
    build_folds(config, workspace)
    run_models(config, workspace, folds=list(range(config.folds.n_splits)), models=["phash"])
    return config, workspace, train


def tune_recording_warnings(config, workspace, trials):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = tune_model(config, workspace, config.model("phash"), trials=trials)
    return result, [str(warning.message) for warning in caught]


def test_a_model_without_signal_ends_at_the_trivial_answer_and_says_so(tmp_path):
    # a threshold range that cannot exclude every neighbour: no trial can reach the trivial answer
    config, workspace, train = noise_phash(tmp_path, ["postprocess.threshold=[0.2,0.4]"])
    result, messages = tune_recording_warnings(config, workspace, trials=10)
    trivial = float(np.mean(2.0 / (label_sizes(train[config.columns.label].to_numpy()) + 1)))
    assert result.trivial_score == pytest.approx(trivial, abs=1e-12)
    assert result.oof_score == result.trivial_score and result.params == {"threshold": SELF_ONLY_THRESHOLD}
    assert any(message.startswith("phash: tuned OOF mean row F1 ") and "does not beat the trivial answer (each "
               "posting matches only itself: " in message and "\n" not in message for message in messages)
    stored = load_tuned(result.path)
    assert stored.trivial_score == result.trivial_score
    # predicted as tuned: every posting matches only itself
    oof = pd.read_csv(predict_model(config, workspace, config.model("phash")).oof)
    assert (oof["matches"] == oof["posting_id"]).all()


def test_the_tuner_reaches_the_trivial_answer_in_the_demo_search_space(tmp_path):
    # demo-match's space (threshold up to 0.95, min2 allowed): min2 is the tuner's choice, so trials reach it
    config, workspace, _ = noise_phash(tmp_path)
    result, _ = tune_recording_warnings(config, workspace, trials=30)
    assert result.oof_score >= result.trivial_score
    assert result.params.get("min2") is not True


def test_a_tuned_file_written_before_the_trivial_score_still_loads(tuned_workspace):
    _, base = tuned_workspace
    path = next((base / "tiny-demo-match" / "tuning").glob("tfidf-word.json"))
    stored = json.loads(path.read_text())
    stored.pop("trivial_score", None)
    path.write_text(json.dumps(stored))
    assert load_tuned(path).trivial_score is None


def test_trivial_parameters_put_every_threshold_above_every_similarity():
    assert trivial_params({"threshold": 0.5}) == {"threshold": SELF_ONLY_THRESHOLD}
    assert trivial_params({"threshold:a": 0.5, "threshold:b": 0.5}) == {"threshold:a": SELF_ONLY_THRESHOLD,
                                                                       "threshold:b": SELF_ONLY_THRESHOLD}
    assert trivial_params({"threshold": 0.5, "weight:a": 1.0}) == {"threshold": SELF_ONLY_THRESHOLD, "weight:a": 1.0}


def test_identify_trivial_parameters_put_new_individual_first_for_every_query():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 50, size=(200, 5))
    scores = -np.sort(-rng.uniform(-0.2, 1.0, size=(200, 5)), axis=1).astype(np.float32)
    scores[:3, 0] = 1.0  # as high as a cosine gets
    truth = np.where(rng.random(200) < 0.3, NEW_INDIVIDUAL, labels[:, 0])
    objective = Top5Objective(lambda params: (labels, scores), truth, NEW_INDIVIDUAL)
    trivial = trivial_params({"threshold": 0.5})
    # the trivial submission (new_individual alone) scores the new share; the tuner's fallback, new_individual
    # first and the model's guesses after it, at least that
    assert trivial_answer_score("identify", labels[:, 0], truth) == pytest.approx(np.mean(truth == NEW_INDIVIDUAL))
    assert objective(trivial) >= np.mean(truth == NEW_INDIVIDUAL)
    answers = insert_new_individual(labels, scores, new_individual_threshold(trivial, scores), NEW_INDIVIDUAL)
    assert (answers[:, 0] == NEW_INDIVIDUAL).all()
