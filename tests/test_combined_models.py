"""union/concat/score models end to end on tiny real data: tuned, predicted, scored and kept fresh like any model."""

import json
from pathlib import Path

import pytest
from conftest import tiny_identify, tiny_image_models
from test_training import tiny_match
from typer.testing import CliRunner

from compkit.cli.app import app
from compkit.config import load_config
from compkit.data.fetch import fetch_competition
from compkit.data.folds import build_folds
from compkit.embeddings.runner import run_models
from compkit.errors import ConfigError, StaleArtifactError
from compkit.predict import predict_model
from compkit.scoring import score_submission
from compkit.status import stage_statuses
from compkit.tuning.study import tune_model
from compkit.workspace import Workspace

COMBINED_MATCH = """[[models]]
name = "union"
kind = "union"
members = ["tfidf-word", "phash"]

[[models]]
name = "concat"
kind = "concat"
members = ["tfidf-word", "phash"]

[postprocess]"""


def prepared(folder: Path, work: Path):
    config = load_config(str(folder))
    workspace = Workspace.for_competition(config.slug, work)
    fetch_competition(config, workspace)
    build_folds(config, workspace)
    run_models(config, workspace, folds=list(range(config.folds.n_splits)), device="cpu")
    return config, workspace


@pytest.fixture(scope="module")
def matchers(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("combined-match")
    folder = tiny_match(tmp_path)
    toml = folder / "competition.toml"
    text = toml.read_text()
    cnn, postprocess = text.index('[[models]]\nname = "cnn"'), text.index("[postprocess]")
    toml.write_text(text[:cnn] + COMBINED_MATCH + text[postprocess + len("[postprocess]"):])
    return (folder, *prepared(folder, tmp_path / "work"))


def test_union_and_concat_tune_and_predict_from_their_members_embeddings(matchers):
    _, config, workspace = matchers
    union = tune_model(config, workspace, config.model("union"), trials=6)
    min2 = {"min2_threshold:tfidf-word", "min2_threshold:phash"} if union.params["min2"] else set()
    assert set(union.params) == {"threshold:tfidf-word", "threshold:phash", "min2", *min2}  # min2: the tuner's
    assert union.other_candidates_score is not None
    concat = tune_model(config, workspace, config.model("concat"), trials=6)
    min2 = {"min2_threshold"} if concat.params["min2"] else set()
    assert {"weight:tfidf-word", "weight:phash", "threshold", "min2", *min2} == set(concat.params)
    for name in ("union", "concat"):
        result = predict_model(config, workspace, config.model(name))
        assert 0.0 < score_submission(config, workspace, result.submission).score <= 1.0
        assert result.oof.read_text().splitlines()[0] == "posting_id,matches"
    stages = [status.stage for status in stage_statuses(config, workspace)]
    assert "tune union" in stages and "predict concat" in stages and "embed union" not in stages
    assert (workspace.tuning_dir / "union" / "candidates-all.npz").is_file()


def test_combined_models_train_nothing_and_go_stale_with_their_members(matchers):
    folder, config, workspace = matchers
    with pytest.raises(ConfigError, match="'union' of kind 'union' trains nothing: .*tfidf-word, phash"):
        run_models(config, workspace, folds=[0], models=["union"])
    tune_model(config, workspace, config.model("union"), trials=3)
    toml = folder / "competition.toml"
    original = toml.read_text()
    toml.write_text(original.replace('analyzer = "word"', 'analyzer = "word"\nsublinear_tf = false'))
    try:
        changed = load_config(str(folder))
        run_models(changed, workspace, folds=[0, 1], models=["tfidf-word"])
        with pytest.raises(StaleArtifactError, match="changed since .*tune-threshold -c tiny-match --model union"):
            predict_model(changed, workspace, changed.model("union"))
    finally:
        toml.write_text(original)
        run_models(config, workspace, folds=[0, 1], models=["tfidf-word"])


def test_ensemble_method_concat_tunes_an_embedding_ensemble_of_the_named_models(matchers):
    folder, config, workspace = matchers
    runner = CliRunner()
    result = runner.invoke(app, ["ensemble", "-c", str(folder), "--workspace", str(workspace.root.parent),
                                 "--method", "concat", "--model", "tfidf-word", "--model", "phash", "--trials", "8"])
    assert result.exit_code == 0, result.output
    assert workspace.submission_csv("ensemble").read_bytes() == workspace.submission_csv("ensemble-concat").read_bytes()
    tuned = json.loads(workspace.tuned_params("ensemble-concat").read_text())
    assert {"weight:tfidf-word", "weight:phash"} <= set(tuned["params"])
    refused = runner.invoke(app, ["ensemble", "-c", str(folder), "--workspace", str(workspace.root.parent),
                                  "--method", "score"])
    assert refused.exit_code == 1 and "applies to identify competitions, not match" in refused.output


@pytest.mark.filterwarnings("ignore:.*fewer than n_splits")
def test_score_and_concat_identify_models_with_per_species_thresholds(tmp_path):
    models = tiny_image_models(("cnn", "lcnet_050"), ("resnet", "test_resnet")) + """[[models]]
name = "score"
kind = "score"
members = ["cnn", "resnet"]

[[models]]
name = "concat"
kind = "concat"
members = ["cnn", "resnet"]
weights = [1.0, 1.0]

"""
    folder = tiny_identify(tmp_path, "tiny-identify", models, by_threshold=True,  # per species needs it
                           postprocess="new_individual_per_species = true\nspecies_min_queries = 10\n")
    config, workspace = prepared(folder, tmp_path / "work")

    score = tune_model(config, workspace, config.model("score"), trials=6)
    assert {"weight:cnn", "weight:resnet", "threshold"} <= set(score.params)
    assert any(key.startswith("species_threshold:") for key in score.params)  # the demo's common species
    concat = tune_model(config, workspace, config.model("concat"), trials=6)
    assert not any(key.startswith("weight:") for key in concat.params)  # fixed by the config
    for name in ("score", "concat"):
        predicted = predict_model(config, workspace, config.model(name))
        assert 0.0 <= score_submission(config, workspace, predicted.submission).score <= 1.0
        assert "new_individual" in predicted.oof.read_text()
