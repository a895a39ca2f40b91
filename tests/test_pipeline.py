"""The one stage list: `compkit run` makes each stage once, `status` and `run` agree, the fold count has one owner."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from test_cli_pipeline import invoke, tiny_competition

from compkit.config import load_config
from compkit.pipeline import FRESH, run_pipeline
from compkit.stages import pipeline_stages
from compkit.status import stage_statuses
from compkit.workspace import Workspace

MATCHERS_ONLY = re.compile(r'\[\[models\]\]\nname = "[^"]+"\nkind = "(?!tfidf|phash)\w+".*?(?=\n\[|\Z)', re.S)


def matchers_competition(tmp_path: Path) -> Path:
    """A tiny demo-match with its matchers only (TF-IDF and phash: no training, so tests stay fast)."""
    folder = tiny_competition(tmp_path, "demo-match")
    toml = folder / "competition.toml"
    toml.write_text(MATCHERS_ONLY.sub("", toml.read_text()))
    return folder


def snapshot(root: Path) -> dict[str, str]:
    """Return every file under `root` (relative path -> sha256 of its bytes)."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def test_second_run_of_a_fresh_workspace_makes_nothing_and_changes_no_byte(tuned_workspace):
    folder, base = tuned_workspace  # already run once through every stage
    config = load_config(str(folder))
    workspace = Workspace.for_competition(config.slug, base)
    before = snapshot(workspace.root)
    second = run_pipeline(config, workspace, trials=5)
    assert second.made == []
    assert {outcome for _, outcome in second.stages} == {FRESH}
    assert snapshot(workspace.root) == before
    assert set(second.oof_scores) == {m.name for m in config.models} | {"ensemble"}


def test_status_and_run_read_the_same_stage_list(tuned_workspace):
    folder, base = tuned_workspace
    config = load_config(str(folder))
    workspace = Workspace.for_competition(config.slug, base)
    statuses = stage_statuses(config, workspace)
    assert [s.stage for s in statuses] == [stage.name for stage in pipeline_stages(config, workspace)]
    assert {s.state for s in statuses} == {"fresh"}

    tuned = workspace.tuned_params("phash")
    original = tuned.read_bytes()
    tuned.write_text(tuned.read_text().replace('"model"', '"model" ', 1))  # same parameters, other bytes
    states = {s.stage: s.state for s in stage_statuses(config, workspace) if not s.fresh}
    assert states == {"tune phash": "damaged", "predict phash": "stale"}
    again = run_pipeline(config, workspace, trials=3)
    assert again.made == ["tune phash"]  # re-read from its study: the same bytes, so its CSVs stay fresh
    assert tuned.read_bytes() == original
    assert {s.state for s in stage_statuses(config, workspace)} == {"fresh"}


def test_run_says_stage_by_stage_that_a_fresh_workspace_needs_nothing(tuned_workspace):
    folder, base = tuned_workspace
    second = invoke("run", "-c", folder, "--workspace", base, "--trials", "3")
    assert second.exit_code == 0, second.output
    assert "data: fresh, skipped" in second.output and "tune ensemble: fresh, skipped" in second.output
    assert "nothing to do: every stage is fresh" in second.output
    assert "test SE" in second.output and "test: ensemble - best single model (" in second.output
    assert "cross-fitted" in second.output
    assert re.search(r"ensemble\s+│\s+\d\.\d{6}\s+│\s+\d\.\d{6}\s+│", second.output), second.output


def test_run_scores_the_ensemble_against_its_best_single_model_on_test(tuned_workspace):
    folder, base = tuned_workspace
    config = load_config(str(folder))
    report = run_pipeline(config, Workspace.for_competition(config.slug, base), trials=3)
    singles = {name: score for name, score in report.test_scores.items() if name != "ensemble"}
    best = max(singles, key=singles.get)
    margin = report.ensemble_margin
    assert (margin.a, margin.b) == ("ensemble", best)
    assert margin.difference == pytest.approx(report.test_scores["ensemble"] - singles[best], abs=1e-12)
    assert report.test_errors[best] > 0 and margin.standard_error >= 0
    assert 0 < report.cross_fitted_scores["ensemble"] <= report.oof_scores["ensemble"]
    assert margin.n_rows == len((base / config.slug / "data" / config.data.solution).read_text().splitlines()) - 1


def test_train_all_folds_follows_the_folds_artifact_not_the_config(tmp_path):
    competition = matchers_competition(tmp_path)  # the config says n_splits = 3
    work = tmp_path / "work"
    embeddings = work / "tiny-demo-match" / "embeddings" / "phash"
    assert invoke("fetch", "-c", competition, "--workspace", work).exit_code == 0
    for n_splits in (2, 4):
        assert invoke("folds", "-c", competition, "--workspace", work, "--n-splits", n_splits).exit_code == 0
        trained = invoke("train", "-c", competition, "--workspace", work)
        assert trained.exit_code == 0, trained.output
        assert {f"fold{fold}" for fold in range(n_splits)} <= {p.name for p in embeddings.iterdir()}
    assert not (embeddings / "fold4").exists()
    tuned = invoke("tune-threshold", "-c", competition, "--workspace", work, "--model", "phash", "--trials", 2)
    assert tuned.exit_code == 0, tuned.output
    predicted = invoke("predict", "-c", competition, "--workspace", work, "--model", "phash")
    assert predicted.exit_code == 0, predicted.output
    train_rows = len((work / "tiny-demo-match" / "data" / "train.csv").read_text().splitlines()) - 1
    oof_rows = len((work / "tiny-demo-match" / "oof" / "phash.csv").read_text().splitlines()) - 1
    assert oof_rows == train_rows  # every fold's rows have OOF predictions


def test_fold_out_of_range_names_the_folds_artifact_count(tmp_path):
    competition = matchers_competition(tmp_path)
    work = tmp_path / "work"
    invoke("fetch", "-c", competition, "--workspace", work)
    invoke("folds", "-c", competition, "--workspace", work, "--n-splits", 2)
    result = invoke("train", "-c", competition, "--workspace", work, "--fold", 2)
    assert result.exit_code == 1
    assert "--fold 2: must be between 0 and 1 (or 'all')" in result.stderr


def test_tune_of_a_stale_model_comes_before_its_predict_in_one_list(tmp_path):
    config = load_config(str(matchers_competition(tmp_path)))
    names = [stage.name for stage in pipeline_stages(config, Workspace.for_competition(config.slug, tmp_path))]
    assert names[:2] == ["data", "folds"]
    for model in config.models:
        assert names.index(f"tune {model.name}") < names.index(f"predict {model.name}") < names.index("ensemble")


def test_run_refuses_bad_options_before_any_stage(tuned_workspace):
    folder, base = tuned_workspace
    result = invoke("run", "-c", folder, "--workspace", base, "--jobs", 0)
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: --jobs 0: must be >= 1"


def test_a_damaged_artifact_is_reported_by_status_and_remade_by_run(tuned_workspace):
    folder, base = tuned_workspace
    config = load_config(str(folder))
    workspace = Workspace.for_competition(config.slug, base)
    tuned = workspace.tuned_ensemble
    tuned.write_bytes(tuned.read_bytes()[:20])  # truncated mid-file
    states = {s.stage: s for s in stage_statuses(config, workspace)}
    assert states["ensemble"].state == "damaged" and str(tuned) in states["ensemble"].detail
    shown = invoke("status", "-c", folder, "--workspace", base)
    assert shown.exit_code == 0 and "damaged" in shown.stdout
    again = run_pipeline(config, workspace, trials=3)
    assert "tune ensemble" in again.made
    assert {s.state for s in stage_statuses(config, workspace)} == {"fresh"}
