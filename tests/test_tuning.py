"""OOF neighbours, Optuna tuning on an RDB storage, and per-model predictions (tiny real data)."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from test_training import tiny_match

from compkit.config import load_config
from compkit.data.fetch import fetch_competition
from compkit.data.folds import build_folds
from compkit.embeddings.runner import run_models
from compkit.errors import ConfigError, DataError, ParameterError, StaleArtifactError
from compkit.predict import predict_model
from compkit.retrieval.single import oof_neighbors
from compkit.scoring import score_submission
from compkit.tuning.study import default_study_name, open_study, read_tuned, storage_url, tune_model
from compkit.tuning.tuned import TunedModel, load_tuned
from compkit.workspace import Workspace

MATCHERS = ["tfidf-word", "phash"]


@pytest.fixture
def embedded(tmp_path):
    folder = tiny_match(tmp_path)
    config = load_config(str(folder))
    workspace = Workspace.for_competition(config.slug, tmp_path / "work")
    fetch_competition(config, workspace)
    build_folds(config, workspace)
    run_models(config, workspace, folds=[0, 1], models=MATCHERS)
    return folder, config, workspace


def test_all_candidates_add_other_folds_as_distractors(embedded):
    _, config, workspace = embedded
    model = config.model("tfidf-word")
    within = oof_neighbors(config, model, workspace, candidates="fold")
    across = oof_neighbors(config, model, workspace, candidates="all")
    valid = within.indices >= 0
    assert (within.folds[np.clip(within.indices, 0, None)][valid] == np.repeat(within.folds, valid.sum(1))).all()
    assert (across.folds[across.indices] != across.folds[:, None]).any()
    is_self = within.indices == np.arange(len(within.ids))[:, None]
    assert is_self.any(axis=1).all()
    np.testing.assert_allclose(within.similarities[is_self], within.similarities[:, 0], atol=1e-5)  # ties aside


def test_tuning_beats_the_default_threshold_and_writes_params_and_plot(embedded):
    _, config, workspace = embedded
    result = tune_model(config, workspace, config.model("tfidf-word"), trials=25)
    assert result.oof_score >= result.default_score
    low, high = config.postprocess.threshold
    assert low <= result.params["threshold"] <= high
    assert "min2" in result.params  # demo-match allows min2: the tuner chooses it on or off
    assert result.params.get("min2_threshold", low) <= result.params["threshold"]
    written = json.loads(result.path.read_text())
    assert written["params"] == result.params and written["other_candidates_score"] is not None
    assert result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tuned_parameters_read_back_as_one_typed_record(embedded):
    _, config, workspace = embedded
    model = config.model("phash")
    result = tune_model(config, workspace, model, trials=3)
    tuned = read_tuned(config, model, workspace)
    assert isinstance(tuned, TunedModel) and tuned == load_tuned(workspace.tuned_params("phash"))
    assert (tuned.model, tuned.params, tuned.oof_score, tuned.n_trials) == ("phash", result.params, result.oof_score, 3)
    assert tuned.candidates == "all" and tuned.study == result.study
    assert workspace.tuning_dir / tuned.plot == workspace.score_plot("phash") == result.plot


def test_a_tuned_file_without_its_fields_is_refused_by_name(tmp_path):
    path = tmp_path / "tuning" / "phash.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"model": "phash"}))
    with pytest.raises(DataError, match="phash.json: not a tuned-parameters file \\(no 'params'\\)"):
        load_tuned(path)


def test_negative_trials_are_refused_naming_the_parameter(tmp_path):
    config = load_config("demo-match")
    with pytest.raises(ParameterError, match="trials=-1: must be >= 0") as raised:
        tune_model(config, Workspace(tmp_path), config.models[0], trials=-1)
    assert raised.value.parameter == "trials"


def test_trials_are_the_sqlite_studys_total_a_rerun_tops_up_to(embedded):
    _, config, workspace = embedded
    model = config.model("phash")
    tune_model(config, workspace, model, trials=5)
    again = tune_model(config, workspace, model, trials=5, skip_fresh=True)
    reread = tune_model(config, workspace, model, trials=5)
    assert again.skipped and (again.n_trials, reread.n_trials) == (5, 5)
    topped_up = tune_model(config, workspace, model, trials=12, skip_fresh=True)
    assert not topped_up.skipped and topped_up.n_trials == 12
    study = optuna.load_study(study_name=topped_up.study, storage=f"sqlite:///{workspace.study_storage}")
    assert [trial.state.name for trial in study.trials] == ["COMPLETE"] * 12


def test_new_neighbours_mean_a_new_study(embedded):
    import dataclasses

    _, config, workspace = embedded
    model = config.model("phash")
    before = tune_model(config, workspace, model, trials=3)
    assert before.study == default_study_name(config, workspace, model, "all")
    retrained = dataclasses.replace(config, embeddings=dataclasses.replace(config.embeddings, dtype="float16"))
    run_models(retrained, workspace, folds=[0, 1], models=["phash"])  # other embeddings, other neighbours
    after = tune_model(retrained, workspace, model, trials=3)
    assert after.study != before.study and after.n_trials == 3  # not the old study's trials, scored elsewhere


def test_two_processes_tuning_one_sqlite_study_end_it_with_its_total(embedded, tmp_path):
    folder, config, workspace = embedded
    tune_model(config, workspace, config.model("tfidf-word"), trials=1)  # neighbours cached before the race
    workspace.study_storage.unlink()  # and the study database created by it, as on a fresh workspace
    command = [sys.executable, "-m", "compkit.cli", "tune-threshold", "-c", str(folder), "--model", "tfidf-word",
               "--trials", "30", "--force", "--workspace", str(tmp_path / "work")]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for worker in workers:
        _, error = worker.communicate(timeout=300)
        assert worker.returncode == 0, error
    study = optuna.load_study(study_name=default_study_name(config, workspace, config.model("tfidf-word"), "all"),
                              storage=f"sqlite:///{workspace.study_storage}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 30


RACE_TO_CREATE = """
import pathlib, sys, time
from compkit.tuning.study import open_study
import optuna, sqlalchemy  # imported before the start, so the processes race on the storage alone

url, ready, go = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
ready.touch()
while not go.exists():
    time.sleep(0.005)
open_study(url, "race", seed=0).optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=1)
"""


def test_processes_racing_to_create_a_fresh_sqlite_storage_all_succeed(tmp_path):
    for attempt in range(3):
        url, go = f"sqlite:///{tmp_path / f'fresh{attempt}.sqlite3'}", tmp_path / f"go{attempt}"
        ready = [tmp_path / f"ready{attempt}-{worker}" for worker in range(2)]
        workers = [subprocess.Popen([sys.executable, "-c", RACE_TO_CREATE, url, str(flag), str(go)],
                                    stderr=subprocess.PIPE, text=True) for flag in ready]
        while not all(flag.exists() for flag in ready):
            time.sleep(0.01)
        go.touch()
        for worker in workers:
            _, error = worker.communicate(timeout=120)
            assert worker.returncode == 0, error
        states = [trial.state for trial in optuna.load_study(study_name="race", storage=url).trials]
        assert states == [optuna.trial.TrialState.COMPLETE] * 2


KILLED_MID_TRIAL = """
import os, signal, sys, time
from compkit.tuning.study import open_study

def killed(trial):
    time.sleep(1)  # long enough for the trial's first heartbeat
    os.kill(os.getpid(), signal.SIGKILL)

open_study(sys.argv[1], sys.argv[2], seed=0).optimize(killed, n_trials=1)
"""


def tuned_twice_then_killed(embedded, script: str):
    """Tune phash for 2 trials, then SIGKILL `script` run on its study; return (config, workspace, model,
    storage url, study name)."""
    _, config, workspace = embedded
    model = config.model("phash")
    tune_model(config, workspace, model, trials=2)
    url, name = storage_url(workspace, None), default_study_name(config, workspace, model, "all")
    assert subprocess.run([sys.executable, "-c", script, url, name], timeout=120).returncode == -9
    return config, workspace, model, url, name


def test_a_trial_killed_mid_study_is_failed_retried_and_not_counted(embedded, monkeypatch):
    config, workspace, model, url, name = tuned_twice_then_killed(embedded, KILLED_MID_TRIAL)
    assert optuna.load_study(study_name=name, storage=url).trials[-1].state == optuna.trial.TrialState.RUNNING
    monkeypatch.setenv("COMPKIT_TRIAL_HEARTBEAT_S", "1")
    monkeypatch.setenv("COMPKIT_TRIAL_GRACE_S", "2")
    time.sleep(3.5)  # SQLite keeps heartbeats to the second

    result = tune_model(config, workspace, model, trials=5)

    trials = optuna.load_study(study_name=name, storage=url).trials
    assert [trial.state.name for trial in trials] == ["COMPLETE"] * 2 + ["FAIL"] + ["COMPLETE"] * 3
    assert trials[3].system_attrs["failed_trial"] == 2  # the killed trial was run again
    assert result.n_trials == 5 and load_tuned(result.path).n_trials == 5


KILLED_TUNER = """
import os, signal, sys
from compkit.tuning.budget import optimize_to_total
from compkit.tuning.study import open_study

def killed(trial):
    os.kill(os.getpid(), signal.SIGKILL)

optimize_to_total(open_study(sys.argv[1], sys.argv[2], seed=0), killed, total=5, on_complete=lambda: None)
"""


def test_a_tuner_killed_on_this_machine_is_retried_at_once_not_after_the_heartbeat_grace(embedded, monkeypatch):
    config, workspace, model, url, name = tuned_twice_then_killed(embedded, KILLED_TUNER)
    monkeypatch.delenv("COMPKIT_TRIAL_GRACE_S", raising=False)  # the default: 60 s

    started = time.perf_counter()
    result = tune_model(config, workspace, model, trials=4)

    assert time.perf_counter() - started < 30  # its process is gone: no wait for the heartbeat to go stale
    trials = optuna.load_study(study_name=name, storage=url).trials
    assert [trial.state.name for trial in trials] == ["COMPLETE"] * 2 + ["FAIL"] + ["COMPLETE"] * 2
    assert trials[3].system_attrs["failed_trial"] == 2
    assert result.n_trials == 4


ASKED_THEN_KILLED = """
import os, signal, sys
from compkit.tuning.study import open_study

open_study(sys.argv[1], sys.argv[2], seed=0).ask()  # created RUNNING, killed before any heartbeat
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_trial_killed_before_its_first_heartbeat_is_failed_after_the_grace_period(embedded, monkeypatch):
    config, workspace, model, url, name = tuned_twice_then_killed(embedded, ASKED_THEN_KILLED)
    monkeypatch.setenv("COMPKIT_TRIAL_HEARTBEAT_S", "1")
    monkeypatch.setenv("COMPKIT_TRIAL_GRACE_S", "2")

    results = []  # it never beats: without the rule the tuner would wait for it forever, so a thread and a limit
    tuner = threading.Thread(target=lambda: results.append(tune_model(config, workspace, model, trials=4)),
                             daemon=True)
    tuner.start()
    tuner.join(timeout=60)

    assert results, "the tuner still waits for a trial that never began"
    result = results[0]
    trials = optuna.load_study(study_name=name, storage=url).trials
    assert [trial.state.name for trial in trials][:3] == ["COMPLETE", "COMPLETE", "FAIL"]
    assert sum(trial.state.name == "COMPLETE" for trial in trials) == 4 and result.n_trials == 4


def test_predict_refuses_untuned_then_writes_valid_csvs(embedded):
    _, config, workspace = embedded
    model = config.model("tfidf-word")
    with pytest.raises(StaleArtifactError, match="not tuned yet .*compkit tune-threshold"):
        predict_model(config, workspace, model)
    tune_model(config, workspace, model, trials=10)
    result = predict_model(config, workspace, model)
    scored = score_submission(config, workspace, result.submission)
    assert 0.0 < scored.score <= 1.0 and scored.n_rows == result.test_rows
    oof = result.oof.read_text().splitlines()
    assert oof[0] == "posting_id,matches" and len(oof) == result.oof_rows + 1


def test_predict_refuses_parameters_tuned_before_the_config_changed(embedded):
    folder, config, workspace = embedded
    tune_model(config, workspace, config.model("phash"), trials=3)
    toml = folder / "competition.toml"
    toml.write_text(toml.read_text() + '\n[embeddings]\ndtype = "float16"\n')
    changed = load_config(str(folder))
    run_models(changed, workspace, folds=[0, 1], models=["phash"])
    with pytest.raises(StaleArtifactError, match="changed since .*compkit tune-threshold -c tiny-match --model phash"):
        predict_model(changed, workspace, changed.model("phash"))


@pytest.mark.filterwarnings("ignore:.*fewer than n_splits")
def test_identify_models_tune_and_predict_with_new_individual(tmp_path):
    root = Path(__file__).resolve().parents[1]
    text = (root / "competitions" / "demo-identify" / "competition.toml").read_text()
    import re

    text = re.sub(r"n_train_groups = \d+", "n_train_groups = 30", text)
    text = re.sub(r"n_test_groups = \d+", "n_test_groups = 6", text)
    text = re.sub(r"image_size = \d+", "image_size = 32", text)
    text = text.replace("n_splits = 4", "n_splits = 2").replace('slug = "demo-identify"', 'slug = "tiny-identify"')
    head, _, tail = text.partition("[postprocess]")
    tail = tail.replace('new_individual = "fraction"', 'new_individual = "threshold"')  # first by threshold
    head = head[: head.index("[[models]]")] if "[[models]]" in head else head
    text = head + """[[models]]
name = "cnn"
kind = "image"
backbone = "lcnet_050"
image_size = 32
embedding_dim = 32
train = { epochs = 1, batch_size = 16, lr = 2e-3 }

[postprocess]""" + tail
    folder = tmp_path / "competitions" / "tiny-identify"
    folder.mkdir(parents=True)
    (folder / "competition.toml").write_text(text)
    config = load_config(str(folder))
    workspace = Workspace.for_competition(config.slug, tmp_path / "work")
    fetch_competition(config, workspace)
    build_folds(config, workspace)
    run_models(config, workspace, folds=[0, 1], device="cpu")
    result = tune_model(config, workspace, config.model("cnn"), trials=10)
    assert result.oof_score >= result.default_score
    predicted = predict_model(config, workspace, config.model("cnn"))
    scored = score_submission(config, workspace, predicted.submission)
    assert 0.0 <= scored.score <= 1.0
    assert "new_individual" in predicted.submission.read_text()

    toml = folder / "competition.toml"
    toml.write_text(toml.read_text().replace('new_individual = "threshold"', 'new_individual = "fraction"'))
    by_fraction = load_config(str(folder))
    result = tune_model(by_fraction, workspace, by_fraction.model("cnn"), trials=10)
    fraction = result.params["new_individual_fraction"]
    rows = predict_model(by_fraction, workspace, by_fraction.model("cnn")).submission.read_text().splitlines()[1:]
    first_is_new = np.mean([row.split(",")[1].split()[0] == "new_individual" for row in rows])
    assert abs(first_is_new - fraction) <= 1.5 / len(rows) + 1e-9


def test_blending_stages_change_the_cached_neighbours_and_still_predict(embedded):
    folder, config, workspace = embedded
    plain = oof_neighbors(config, config.model("tfidf-word"), workspace, candidates="all")
    toml = folder / "competition.toml"
    toml.write_text(toml.read_text().replace("[postprocess]", "[postprocess]\nblend_stages = 2\nblend_threshold = 0.5"))
    blended_config = load_config(str(folder))
    blended = oof_neighbors(blended_config, blended_config.model("tfidf-word"), workspace, candidates="all")
    assert not np.array_equal(plain.similarities, blended.similarities)
    tune_model(blended_config, workspace, blended_config.model("tfidf-word"), trials=5)
    result = predict_model(blended_config, workspace, blended_config.model("tfidf-word"))
    assert score_submission(blended_config, workspace, result.submission).score > 0


def test_a_read_only_study_storage_is_one_line_naming_it(tmp_path, monkeypatch):
    path = tmp_path / "db" / "study.sqlite3"
    path.parent.mkdir()
    open_study(f"sqlite:///{path}", "s", seed=0).optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    url = f"sqlite:///file:{path}?mode=ro&uri=true"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"--storage .*study.sqlite3.*: cannot open \(attempt to write a readonly"):
        open_study(url, "s", seed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]  # the URI's lock is beside its file, not in ./file:
