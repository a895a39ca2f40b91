"""compkit on a Dask cluster of separate processes (`dask scheduler`, `dask worker`), as on several machines:
training folds as tasks, a worker killed mid-fold, paths mapped between machines, `run --scheduler`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dask_cluster import start_cluster
from test_cli_pipeline import invoke
from test_training import prepared, tiny_match

from compkit.cluster import client_for, on_this_machine, path_map
from compkit.config import load_config
from compkit.data.fetch import fetch_competition
from compkit.data.folds import build_folds
from compkit.embeddings.runner import run_models
from compkit.errors import ConfigError
from compkit.workspace import Workspace, read_manifest

COMPKIT = Path(sys.executable).with_name("compkit")


@pytest.fixture
def cluster(tmp_path):
    cluster = start_cluster(tmp_path / "cluster", workers=2)
    yield cluster
    cluster.stop()


def stage_states(folder: Path, work: Path) -> dict[str, str]:
    result = invoke("status", "-c", folder, "--workspace", work, "--json")
    assert result.exit_code == 0, result.output
    return {stage["stage"]: stage["state"] for stage in json.loads(result.stdout)["stages"]}


def test_folds_train_as_tasks_on_the_worker_processes(tmp_path, cluster):
    from distributed import get_task_stream

    config, workspace = prepared(tmp_path, epochs=1)
    client = client_for(cluster.address)
    with get_task_stream(client=client) as stream:
        outcomes = run_models(config, workspace, folds=[0, 1], models=["cnn", "phash"], scheduler=cluster.address)
    assert [(o.model, o.fold, o.trained is not None, o.embedded.skipped) for o in outcomes] == [
        ("cnn", 0, True, False), ("cnn", 1, True, False), ("phash", 0, False, False), ("phash", 1, False, False)]
    ran_on = {task["worker"] for task in stream.data if str(task["key"]).startswith("compkit-")}
    assert ran_on == set(client.scheduler_info()["workers"])  # both worker processes took tasks
    assert outcomes[0].embedded.directory == workspace.embeddings_dir("cnn", 0)
    states = stage_states(tiny_match_folder(tmp_path), workspace.root.parent)
    assert {states[f"{verb} {model}"] for verb in ("train", "embed") for model in ("cnn",)} == {"fresh"}
    again = run_models(config, workspace, folds=[0, 1], models=["cnn"], scheduler=cluster.address)
    assert all(o.trained.skipped and o.embedded.skipped for o in again)  # a second run does nothing


def tiny_match_folder(tmp_path: Path) -> Path:
    return tmp_path / "competitions" / "tiny-match"


def test_a_worker_killed_mid_fold_has_its_task_rerun_on_the_other_worker(tmp_path, cluster):
    folder = tiny_match(tmp_path, epochs=6)
    config = load_config(str(folder))
    work = tmp_path / "work"
    workspace = Workspace.for_competition(config.slug, work)
    fetch_competition(config, workspace)
    build_folds(config, workspace)
    train = subprocess.Popen([COMPKIT, "train", "-c", folder, "--workspace", work, "--model", "cnn",
                              "--scheduler", cluster.address], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    killed_fold = _kill_a_worker_after_an_epoch(cluster, workspace, train)
    output, _ = train.communicate(timeout=300)
    assert train.returncode == 0, output
    rerun = read_manifest(workspace.model_dir("cnn", killed_fold))
    assert rerun["resumed_from_epoch"] >= 1  # the other worker went on from the killed one's last.pt
    assert (workspace.model_dir("cnn", killed_fold) / "best.pt").is_file()
    states = stage_states(folder, work)
    assert states["train cnn"] == states["embed cnn"] == "fresh"
    assert not [p for p in workspace.root.rglob(".*tmp-*")]  # the killed write's temporary was cleaned


def _kill_a_worker_after_an_epoch(cluster, workspace: Workspace, train: subprocess.Popen) -> int:
    """SIGKILL worker w0 once both folds have a checkpoint and w0 is training; return the fold it held."""
    client = client_for(cluster.address)
    names = {address: info["name"] for address, info in client.scheduler_info()["workers"].items()}
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert train.poll() is None, train.stdout.read()
        held = {names[address]: keys for address, keys in client.processing().items() if keys}
        checkpoints = [workspace.resume_checkpoint("cnn", fold).is_file() for fold in (0, 1)]
        if "w0" in held and all(checkpoints):
            key = str(held["w0"][0])
            cluster.kill_worker("w0")
            return int(key.split("-fold")[1].split("-")[0])
        time.sleep(0.05)
    raise AssertionError("worker w0 never held a training task with a checkpoint written")


def test_the_test_set_is_embedded_as_shard_tasks_giving_the_same_bytes_as_one_pass(tmp_path, cluster):
    import dataclasses

    import numpy as np
    import torch
    from distributed import get_task_stream

    from compkit.embeddings.cache import embed_model_fold

    config, workspace = prepared(tmp_path, epochs=1, test_groups=30)
    config = dataclasses.replace(config, embeddings=dataclasses.replace(config.embeddings, test_shard_rows=40))
    with get_task_stream(client=client_for(cluster.address)) as stream:
        run_models(config, workspace, folds=[0, 1], models=["cnn"], scheduler=cluster.address)
    shard_keys = sorted(str(task["key"]) for task in stream.data if "-test-" in str(task["key"]))
    assert len(shard_keys) == 4 and shard_keys[0].endswith("-test-0")  # 2 folds x 2 shards of 64 rows
    assert not list(workspace.root.glob("embeddings/cnn/.fold*-test-shards-*"))
    sharded = np.load(f"{workspace.embedding_file('cnn', 1, 'test')}.npy")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers (OMP_NUM_THREADS=1)
    try:
        embed_model_fold(config, config.model("cnn"), 1, workspace, device="cpu", force=True)
    finally:
        torch.set_num_threads(threads)
    one_pass = np.load(f"{workspace.embedding_file('cnn', 1, 'test')}.npy")
    assert len(one_pass) > 64 and one_pass.tobytes() == sharded.tobytes()


def test_workers_map_the_submitters_paths_to_their_own_mount(tmp_path, monkeypatch):
    real = tmp_path / "shared"
    real.mkdir()
    cluster = start_cluster(tmp_path / "cluster", workers=1,
                            env={"COMPKIT_PATH_MAP": f"/mnt/laptop/work={real}/work;/mnt/laptop={real}"})
    try:
        mapped = client_for(cluster.address).run(lambda: str(on_this_machine("/mnt/laptop/work/demo/folds.csv")))
    finally:
        cluster.stop()
    assert list(mapped.values()) == [f"{real}/work/demo/folds.csv"]
    monkeypatch.setenv("COMPKIT_PATH_MAP", "/a=/b;/a/b=/c")
    assert on_this_machine("/a/b/x") == Path("/c/x") and on_this_machine("/a/bx") == Path("/b/bx")
    assert on_this_machine("/elsewhere/x") == Path("/elsewhere/x")
    with pytest.raises(ConfigError, match="COMPKIT_PATH_MAP: 'relative=/b'"):
        path_map("relative=/b")


def test_status_works_from_another_machine_that_mounts_the_workspace_elsewhere(tmp_path):
    config, workspace = prepared(tmp_path / "here", epochs=1)
    run_models(config, workspace, folds=[0, 1], models=["phash"])
    before = stage_states(tiny_match_folder(tmp_path / "here"), workspace.root.parent)
    moved = tmp_path / "there" / "work"
    shutil.copytree(workspace.root.parent, moved, symlinks=True)
    after = stage_states(tiny_match_folder(tmp_path / "here"), moved)
    assert after == before and after["embed phash"] == "fresh"


def test_run_with_a_scheduler_trains_embeds_and_searches_on_the_cluster(tmp_path, cluster):
    from distributed import get_task_stream

    folder = tiny_match(tmp_path, epochs=1)
    toml = folder / "competition.toml"
    toml.write_text(toml.read_text().replace('name = "tfidf-word"', 'name = "tfidf-word"\nenabled = false'))
    client = client_for(cluster.address)
    storage = f"sqlite:///{tmp_path / 'shared-studies.sqlite3'}"
    command = ["run", "-c", folder, "--workspace", tmp_path / "work", "--trials", "5", "--scheduler",
               cluster.address, "--storage", storage]
    with get_task_stream(client=client) as stream:
        result = invoke(*command)
    assert result.exit_code == 0, result.output
    prefixes = {str(task["key"]).split("-")[0].strip("('\"") for task in stream.data}
    assert "compkit" in prefixes and "_shard_task" in prefixes  # folds and kNN shards ran on the cluster
    import optuna

    studies = {study.study_name for study in optuna.get_all_study_summaries(storage)}
    assert {name.split(".")[1] for name in studies} >= {"cnn", "phash", "ensemble"}, studies
    assert not (tmp_path / "work" / "tiny-match" / "tuning" / "optuna.sqlite3").exists()
    assert "nothing to do" in invoke(*command).output


def test_a_scheduler_that_cannot_be_reached_is_one_line(tmp_path):
    folder = tiny_match(tmp_path, epochs=1)
    work = tmp_path / "work"
    assert invoke("fetch", "-c", folder, "--workspace", work).exit_code == 0
    assert invoke("folds", "-c", folder, "--workspace", work).exit_code == 0
    started = time.monotonic()
    result = invoke("train", "-c", folder, "--workspace", work, "--model", "phash", "--scheduler",
                    "tcp://127.0.0.1:9")
    assert result.exit_code == 1 and time.monotonic() - started < 30
    assert result.output.count("\n") == 1 and "cannot reach the Dask scheduler" in result.output, result.output
    refused = invoke("train", "-c", folder, "--workspace", work, "--backend", "loky", "--scheduler", "tcp://x:1")
    assert refused.exit_code == 1 and "use --backend dask" in refused.output
    assert os.environ.get("COMPKIT_PATH_MAP") is None
