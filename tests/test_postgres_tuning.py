"""Tuning from several processes on one PostgreSQL study: the total budget, no lost trial, a killed worker.

The server is a real PostgreSQL (tests/postgres_server.py); the workers are real `compkit tune-threshold` and
`compkit ensemble --tune` processes, each on its own copy of a tuned tiny demo-match workspace, as machines
that share nothing but the database would be.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from postgres_server import INSTALL_HINT, PostgresTestServer, postgres_bin

from compkit.config import load_config
from compkit.errors import ConfigError
from compkit.tuning import study as study_module
from compkit.tuning.study import default_study_name, heartbeat_settings, open_study
from compkit.workspace import Workspace

MODEL = "tfidf-word"
WORKERS = 3
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
SHORT_HEARTBEAT = {"COMPKIT_TRIAL_HEARTBEAT_S": "1", "COMPKIT_TRIAL_GRACE_S": "3"}
RAN_HERE = re.compile(r"(\d+)\s+of\s+study\s+\S+\s+(\d+)\s+complete\s+trials\s+ran\s+here")
_databases = itertools.count()


@pytest.fixture(scope="module")
def postgres_url() -> str:
    bin_dir = postgres_bin()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail(f"{INSTALL_HINT} (.ci/run runs it before make test)")
        pytest.skip(INSTALL_HINT)
    with PostgresTestServer(bin_dir) as url:
        yield url


@pytest.fixture
def database(postgres_url: str) -> str:
    """The URL of an empty database of its own on the test server."""
    import sqlalchemy

    name = f"test{next(_databases)}"
    engine = sqlalchemy.create_engine(with_driver(postgres_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def workspaces(tuned_matcher_competition: tuple[Path, Path], tmp_path: Path) -> tuple[Path, list[Path]]:
    """(competition folder, one copy of the tuned workspace base per worker)."""
    folder, base = tuned_matcher_competition
    copies = [tmp_path / f"machine{index}" for index in range(WORKERS)]
    for copy in copies:
        shutil.copytree(base, copy)
    return folder, copies


def with_driver(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


def load(url: str, name: str) -> optuna.Study:
    """Load the study as it stands, without failing stale trials (compkit's open_study would)."""
    return optuna.load_study(study_name=name, storage=with_driver(url))


def states(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.trials:
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def start(args: list[str], folder: Path, base: Path, env: dict[str, str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "compkit.cli", *args, "-c", str(folder), "--workspace", str(base)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def tuners(folder: Path, bases: list[Path], url: str, trials: int, env: dict[str, str] = ENV) -> list:
    args = ["tune-threshold", "--model", MODEL, "--storage", url, "--trials", str(trials)]
    return [start(args, folder, base, env) for base in bases]


def finished(worker: subprocess.Popen) -> str:
    """Return the worker's stderr, asserting it exited 0."""
    _, error = worker.communicate(timeout=240)
    assert worker.returncode == 0, error
    return error


def study_name(folder: Path, base: Path) -> str:
    config = load_config(str(folder))
    return default_study_name(config, Workspace.for_competition(config.slug, base), config.model(MODEL), "all")


def trials_of(study: optuna.Study, pid: int) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.user_attrs.get("worker", "").endswith(f":{pid}")]


def test_three_tuners_end_the_study_with_its_total_and_lose_no_trial(workspaces, database):
    folder, bases = workspaces
    names = {study_name(folder, base) for base in bases}
    assert len(names) == 1  # every machine's copy of the neighbours names the same study
    total = 24

    workers = tuners(folder, bases, database, total)
    reports = [finished(worker) for worker in workers]

    study = load(database, names.pop())
    assert states(study).get("COMPLETE") == total
    assert not {"RUNNING", "WAITING"} & set(states(study))
    ran_here = [int(RAN_HERE.search(report).group(1)) for report in reports]
    assert sum(ran_here) == total  # every trial a worker finished is in the study
    for worker, count in zip(workers, ran_here, strict=True):
        assert len([t for t in trials_of(study, worker.pid) if t.state.name == "COMPLETE"]) == count
    tuned = [json.loads((base / "tiny-demo-match" / "tuning" / f"{MODEL}.json").read_text()) for base in bases]
    assert all(record["n_trials"] == total and record["study"] == study.study_name for record in tuned)
    assert all(record["params"] == tuned[0]["params"] and record["oof_score"] == tuned[0]["oof_score"]
               for record in tuned)
    assert tuned[0]["oof_score"] >= study.best_value  # the study's best, or better with min2 polished


def test_a_killed_tuners_trial_is_failed_and_run_again_within_the_total(workspaces, database):
    folder, bases = workspaces
    total = 90  # a trial is RUNNING for milliseconds: enough of them that a loaded machine still catches one
    workers = tuners(folder, bases, database, total, env={**ENV, **SHORT_HEARTBEAT})
    name = study_name(folder, bases[0])

    killed, killed_trial = kill_one_holding_a_trial(workers, database, name)
    survivors = [worker for worker in workers if worker is not killed]
    for worker in survivors:
        finished(worker)

    assert killed.wait(timeout=10) == -signal.SIGKILL
    study = load(database, name)
    assert states(study).get("COMPLETE") == total
    assert not {"RUNNING", "WAITING"} & set(states(study))
    assert study.trials[killed_trial].state.name == "FAIL"
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed_trial]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE"
    assert study.trials[killed_trial].params.items() <= retried[0].params.items()


def kill_one_holding_a_trial(workers: list, url: str, name: str) -> tuple[subprocess.Popen, int]:
    """SIGKILL the first worker caught holding a RUNNING trial; return it and the trial.

    Every live worker is stopped (SIGSTOP) at once before the RUNNING trials are read, so that what is read
    cannot change before the kill, however loaded the machine; the others are then let go (SIGCONT)."""
    by_pid = {worker.pid: worker for worker in workers}
    deadline, study = time.monotonic() + 120, None
    while time.monotonic() < deadline and any(worker.poll() is None for worker in workers):
        try:
            study = study or load(url, name)
        except KeyError:  # the study is not created yet
            time.sleep(0.05)
            continue
        stopped = [worker for worker in workers if worker.poll() is None]
        for worker in stopped:
            os.kill(worker.pid, signal.SIGSTOP)
        try:
            for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                holder = by_pid.get(int(str(trial.user_attrs.get("worker", ":0")).rpartition(":")[2] or 0))
                if holder in stopped:
                    os.kill(holder.pid, signal.SIGKILL)
                    return holder, trial.number
        finally:
            for worker in stopped:
                if worker.poll() is None:
                    os.kill(worker.pid, signal.SIGCONT)
        time.sleep(0.01)
    pytest.fail("no tuner was caught holding a running trial")


def test_three_ensemble_tuners_end_the_weights_study_with_its_total(workspaces, database):
    folder, bases = workspaces
    total = 12
    args = ["ensemble", "--tune", "--storage", database, "--trials", str(total)]
    workers = [start(args, folder, base, ENV) for base in bases]
    for worker in workers:
        finished(worker)

    (summary,) = optuna.get_all_study_summaries(storage=with_driver(database))
    study = load(database, summary.study_name)
    assert ".ensemble." in study.study_name
    assert states(study).get("COMPLETE") == total
    assert not {"RUNNING", "WAITING"} & set(states(study))


def test_a_postgresql_url_without_its_driver_is_one_line_with_the_install(monkeypatch):
    find_spec = study_module.importlib.util.find_spec
    monkeypatch.setattr(study_module.importlib.util, "find_spec",
                        lambda name, *rest: None if name == "psycopg2" else find_spec(name, *rest))
    with pytest.raises(ConfigError) as raised:
        open_study("postgresql://tuner:s3cret@127.0.0.1:1/studies", "s", seed=0)
    assert str(raised.value) == ("--storage postgresql://tuner:***@127.0.0.1:1/studies: needs psycopg2: "
                                 "pip install 'compkit[postgres]'")


def test_a_storage_that_cannot_be_reached_never_prints_its_password(postgres_url):
    port = postgres_url.split(":")[-1].split("/")[0]
    url = f"postgresql://nobody:s3cret@127.0.0.1:{port}/postgres"
    with pytest.raises(ConfigError, match=r"^--storage postgresql://nobody:\*\*\*@127\.0\.0\.1:\d+/postgres: "
                                          r"cannot open \(") as raised:
        open_study(url, "s", seed=0)
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize(("variable", "value"), [("COMPKIT_TRIAL_GRACE_S", "soon"),
                                                 ("COMPKIT_TRIAL_HEARTBEAT_S", "0")])
def test_a_bad_heartbeat_setting_is_refused_naming_the_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=f"^{variable}='{value}': must be a whole number of seconds >= 1$"):
        heartbeat_settings()


def test_a_grace_period_within_one_heartbeat_is_refused(monkeypatch):
    monkeypatch.setenv("COMPKIT_TRIAL_GRACE_S", "5")
    with pytest.raises(ConfigError, match="^COMPKIT_TRIAL_GRACE_S=5 must exceed COMPKIT_TRIAL_HEARTBEAT_S=10"):
        heartbeat_settings()
    monkeypatch.setenv("COMPKIT_TRIAL_HEARTBEAT_S", "1")
    assert heartbeat_settings() == (1, 5)


def test_run_on_a_dask_cluster_with_its_studies_on_postgresql(tmp_path, database):
    from conftest import matcher_competition
    from dask_cluster import start_cluster
    from distributed import get_task_stream

    from compkit.cluster import client_for

    folder = matcher_competition(tmp_path, "pg-dask-match")
    cluster = start_cluster(tmp_path / "cluster", workers=2)
    try:
        with get_task_stream(client=client_for(cluster.address)) as stream:
            result = subprocess.run([sys.executable, "-m", "compkit.cli", "run", "-c", str(folder), "--workspace",
                                     str(tmp_path / "work"), "--trials", "6", "--scheduler", cluster.address,
                                     "--storage", database], env=ENV, capture_output=True, text=True, timeout=300)
    finally:
        cluster.stop()
    assert result.returncode == 0, result.stderr
    assert any(str(task["key"]).startswith("compkit-pg-dask-match-") for task in stream.data)  # folds on workers
    studies = {summary.study_name: summary.n_trials
               for summary in optuna.get_all_study_summaries(with_driver(database))}
    assert {name.split(".")[1] for name in studies} == {"tfidf-word", "tfidf-char", "phash", "ensemble"}, studies
    assert not (tmp_path / "work" / "pg-dask-match" / "tuning" / "optuna.sqlite3").exists()
