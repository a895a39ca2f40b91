"""`fetch` from Kaggle with the real kaggle client, talking to the loopback server in kaggle_server.py."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_CONFIG, TINY_SLUG, RecordingProgress
from kaggle_server import DATA_PREFIX, KaggleTestServer, Reply

from compkit.config import CompetitionConfig
from compkit.data.fetch import fetch_competition
from compkit.data.tables import data_inputs
from compkit.errors import CompkitError, DataError, KaggleError
from compkit.kaggle_client import RetryPolicy, credentials_source
from compkit.workspace import Workspace, is_fresh, read_manifest


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "work" / TINY_SLUG)


@pytest.fixture
def served(kaggle_server: KaggleTestServer, kaggle_credentials: Path, tiny_files: dict[str, bytes]) -> KaggleTestServer:
    kaggle_server.add_competition(TINY_SLUG, tiny_files)
    return kaggle_server


def snapshot(folder: Path) -> dict[str, bytes]:
    """Return every file under `folder` (relative path -> bytes): data/, its manifest, any leftovers."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def no_retry_waits(sleeps: list[float], attempts: int = 5) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, sleep=sleeps.append)


def test_fetch_downloads_extracts_and_writes_a_fresh_manifest(served, tiny_config, tiny_files, workspace):
    progress = RecordingProgress()

    result = fetch_competition(tiny_config, workspace, progress=progress)

    assert not result.skipped and result.source == "kaggle"
    assert result.n_files == len(tiny_files) and result.n_bytes == sum(map(len, tiny_files.values()))
    assert {name: (workspace.data_dir / name).read_bytes() for name in tiny_files} == tiny_files
    assert is_fresh(workspace.data_dir, data_inputs(tiny_config, workspace))
    download = progress.tasks[f"downloading {TINY_SLUG}"]
    assert download.total == download.completed == len(served.competitions[TINY_SLUG].archive)
    assert sorted(p.name for p in workspace.root.iterdir()) == ["data", "data.manifest.json"]
    list_call = served.calls("ListDataFiles")[0]
    assert list_call.body["competitionName"] == TINY_SLUG
    assert list_call.headers["authorization"].startswith("Basic ")
    assert len(served.calls(DATA_PREFIX)) == 1


def test_second_fetch_of_intact_data_downloads_nothing(served, tiny_config, workspace):
    fetch_competition(tiny_config, workspace)
    before = snapshot(workspace.root)

    result = fetch_competition(tiny_config, workspace)

    assert result.skipped and "nothing fetched" in result.message
    assert len(served.calls("DownloadDataFiles")) == 1 and len(served.calls(DATA_PREFIX)) == 1
    assert len(served.calls("ListDataFiles")) == 2
    assert snapshot(workspace.root) == before


def test_fetch_with_force_downloads_again(served, tiny_config, workspace):
    fetch_competition(tiny_config, workspace)

    result = fetch_competition(tiny_config, workspace, force=True)

    assert not result.skipped
    assert len(served.calls("DownloadDataFiles")) == 2


def test_fetch_downloads_again_when_a_local_file_was_damaged(served, tiny_config, tiny_files, workspace):
    fetch_competition(tiny_config, workspace)
    (workspace.data_dir / "train.csv").write_bytes(b"truncated")

    result = fetch_competition(tiny_config, workspace)

    assert not result.skipped
    assert (workspace.data_dir / "train.csv").read_bytes() == tiny_files["train.csv"]


def test_fetch_downloads_again_when_kaggle_lists_changed_files(served, tiny_config, tiny_files, workspace):
    fetch_competition(tiny_config, workspace)
    updated = {**tiny_files, "train.csv": tiny_files["train.csv"] + b"p3,d.jpg,green cap,2\n"}
    served.add_competition(TINY_SLUG, updated)

    result = fetch_competition(tiny_config, workspace)

    assert not result.skipped
    assert (workspace.data_dir / "train.csv").read_bytes() == updated["train.csv"]


def test_fetch_authenticates_with_an_access_token(kaggle_server, tiny_config, tiny_files, workspace, monkeypatch):
    kaggle_server.token = "kaggle-access-token"
    kaggle_server.add_competition(TINY_SLUG, tiny_files)
    monkeypatch.setenv("KAGGLE_API_TOKEN", kaggle_server.token)

    fetch_competition(tiny_config, workspace)

    assert kaggle_server.calls("IntrospectToken")[-1].body == {"token": kaggle_server.token}
    assert kaggle_server.calls("DownloadDataFiles")[0].headers["authorization"] == "Bearer kaggle-access-token"


def test_fetch_without_credentials_says_where_to_put_them(kaggle_server, tiny_config, workspace):
    with pytest.raises(KaggleError, match="no Kaggle credentials found") as caught:
        fetch_competition(tiny_config, workspace)

    assert "kaggle.json" in str(caught.value) and "KAGGLE_USERNAME" in str(caught.value)
    assert kaggle_server.requests == []
    assert not workspace.root.exists()


@pytest.mark.parametrize("content, problem", [
    ('{"username": "someone", "key": "s3cr', "are not valid JSON (Unterminated string starting at: line 1, column 32)"),
    ('["someone", "s3cret"]', "are not a JSON object"),
    ('{"username": "someone"}', "have no 'key'"),
])
def test_fetch_with_a_malformed_kaggle_json_names_the_file_and_what_is_wrong(
    kaggle_server, kaggle_home, tiny_config, workspace, content, problem
):
    kaggle_json = kaggle_home / ".kaggle" / "kaggle.json"
    kaggle_json.write_text(content)

    with pytest.raises(KaggleError) as caught:
        fetch_competition(tiny_config, workspace)

    message = str(caught.value)
    assert message.startswith(f"the Kaggle credentials in {kaggle_json} {problem}: it should hold"), message
    assert "no Kaggle credentials found" not in message and "s3cr" not in message
    assert kaggle_server.requests == []


def test_fetch_says_the_clients_permission_warning_once(served, kaggle_credentials, tmp_path):
    kaggle_credentials.chmod(0o644)  # readable by others: the client warns at import and again at authentication

    fetched = subprocess.run(fetch_command(tmp_path), capture_output=True, text=True, timeout=300,
                             env={**os.environ, "COLUMNS": "400"})

    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stderr.count("Your Kaggle API key is readable by other users") == 1, fetched.stderr


def test_fetch_with_wrong_credentials_fails_with_401(served, tiny_config, workspace, kaggle_credentials):
    kaggle_credentials.write_text(json.dumps({"username": served.username, "key": "not-the-key"}))

    with pytest.raises(KaggleError, match="rejected the credentials") as caught:
        fetch_competition(tiny_config, workspace)

    assert "HTTP 401" in str(caught.value) and "not-the-key" not in str(caught.value)
    assert str(kaggle_credentials) in str(caught.value)


def test_fetch_refused_with_403_points_to_the_rules(served, tiny_config, workspace):
    served.deny(TINY_SLUG, 403)

    with pytest.raises(KaggleError, match="HTTP 403") as caught:
        fetch_competition(tiny_config, workspace)

    assert f"https://www.kaggle.com/competitions/{TINY_SLUG}/rules" in str(caught.value)
    assert "competition name" in str(caught.value)


def test_fetch_of_unknown_competition_fails_with_404(served, tiny_config, workspace):
    config = dataclasses.replace(tiny_config, kaggle="no-such-competition")

    with pytest.raises(KaggleError, match="unknown Kaggle competition 'no-such-competition' \\(HTTP 404\\)"):
        fetch_competition(config, workspace)


def test_fetch_retries_429_honouring_retry_after(served, tiny_config, workspace):
    served.script("DownloadDataFiles", *[Reply(status=429, headers={"Retry-After": "7"}, json={}) for _ in range(2)])
    sleeps: list[float] = []

    result = fetch_competition(tiny_config, workspace, retry=no_retry_waits(sleeps))

    assert not result.skipped
    assert sleeps == [7.0, 7.0]
    assert len(served.calls("DownloadDataFiles")) == 3


def test_fetch_gives_up_after_repeated_503_with_backoff(served, tiny_config, workspace):
    served.script("ListDataFiles", *[Reply(status=503, json={"code": 503, "message": "Unavailable"})] * 3)
    sleeps: list[float] = []

    with pytest.raises(KaggleError, match=r"Kaggle server error \(HTTP 503\) after 3 attempts"):
        fetch_competition(tiny_config, workspace, retry=no_retry_waits(sleeps, attempts=3))

    assert sleeps == [1.0, 2.0]
    assert served.calls("DownloadDataFiles") == []


def test_fetch_retries_a_dropped_download_connection(served, tiny_config, tiny_files, workspace):
    served.script(DATA_PREFIX, Reply(drop=True))
    sleeps: list[float] = []

    fetch_competition(tiny_config, workspace, retry=no_retry_waits(sleeps))

    assert len(sleeps) == 1 and len(served.calls(DATA_PREFIX)) == 2
    assert (workspace.data_dir / "train.csv").read_bytes() == tiny_files["train.csv"]


def test_fetch_with_network_down_fails_and_keeps_data(served, tiny_config, workspace):
    fetch_competition(tiny_config, workspace)
    before = snapshot(workspace.root)
    served.stop()

    with pytest.raises(KaggleError, match="cannot reach Kaggle at localhost via the proxy: connection refused after 2"):
        fetch_competition(tiny_config, workspace, force=True, retry=no_retry_waits([], attempts=2))

    assert snapshot(workspace.root) == before


def test_corrupt_download_leaves_previous_data_intact(served, tiny_config, tiny_files, workspace):
    fetch_competition(tiny_config, workspace)
    before = snapshot(workspace.root)
    served.add_competition(TINY_SLUG, tiny_files, archive=b"PK\x03\x04 this is not a zip archive")

    with pytest.raises(DataError, match="not a valid zip archive"):
        fetch_competition(tiny_config, workspace, force=True)

    assert snapshot(workspace.root) == before


def test_download_without_an_expected_file_is_refused(served, tiny_config, tiny_files, workspace):
    served.add_competition(TINY_SLUG, {k: v for k, v in tiny_files.items() if k != "test.csv"})

    with pytest.raises(DataError, match=f"Kaggle competition '{TINY_SLUG}' has no file 'test.csv'"):
        fetch_competition(tiny_config, workspace)

    assert list(workspace.root.iterdir()) == []


def test_interrupted_fetch_leaves_previous_data_intact(served, tiny_config, workspace):
    fetch_competition(tiny_config, workspace)
    before = snapshot(workspace.root)

    class InterruptedWhileExtracting(RecordingProgress):
        def task(self, description: str, total: float | None = None):
            if description.startswith("extracting"):
                raise KeyboardInterrupt
            return super().task(description, total)

    with pytest.raises(KeyboardInterrupt):
        fetch_competition(tiny_config, workspace, force=True, progress=InterruptedWhileExtracting())

    assert snapshot(workspace.root) == before


def test_config_slug_and_kaggle_name_may_differ(served, tiny_config: CompetitionConfig, workspace):
    config = dataclasses.replace(tiny_config, slug="my-local-name")

    result = fetch_competition(config, workspace)

    assert served.calls("DownloadDataFiles")[0].body == {"competitionName": TINY_SLUG}
    assert result.n_files == 6


def test_fetch_follows_the_pages_of_the_file_listing(
    kaggle_server, kaggle_credentials, tiny_config, tiny_files, workspace
):
    many_images = {f"train_images/{i:04d}.jpg": b"\xff\xd8" for i in range(450)}
    kaggle_server.add_competition(TINY_SLUG, {**tiny_files, **many_images})

    result = fetch_competition(tiny_config, workspace)

    pages = kaggle_server.calls("ListDataFiles")
    assert [call.body.get("pageToken", "") for call in pages] == ["", "200", "400"]
    assert result.n_files == len(tiny_files) + 450
    assert read_manifest(workspace.data_dir)["origin"]["remote_files"]["n_files"] == len(tiny_files) + 450


def test_download_progress_grows_towards_the_archive_size(served, tiny_config, tiny_files, workspace):
    big = {**tiny_files, "train_images/big.jpg": random.Random(0).randbytes(3 << 20)}
    competition = served.add_competition(TINY_SLUG, big)
    competition.chunk_delay = 0.015
    progress = RecordingProgress()

    fetch_competition(tiny_config, workspace, progress=progress)

    archive_size = len(competition.archive)
    updates = progress.tasks[f"downloading {TINY_SLUG}"].updates
    assert any(0 < completed < archive_size and total == archive_size for completed, total in updates)
    assert updates[-1] == (archive_size, archive_size)


def test_fetch_authenticates_with_username_and_key_from_the_environment(
    kaggle_server, tiny_config, tiny_files, workspace, monkeypatch
):
    kaggle_server.add_competition(TINY_SLUG, tiny_files)
    monkeypatch.setenv("KAGGLE_USERNAME", kaggle_server.username)
    monkeypatch.setenv("KAGGLE_KEY", kaggle_server.key)

    result = fetch_competition(tiny_config, workspace)

    assert not result.skipped


def test_credentials_are_looked_up_where_the_official_client_reads_them(kaggle_home: Path):
    environ = {"HOME": str(kaggle_home)}
    (kaggle_home / ".kaggle").rmdir()
    assert credentials_source(environ) is None

    xdg_json = kaggle_home / ".config" / "kaggle" / "kaggle.json"
    xdg_json.parent.mkdir(parents=True)
    xdg_json.write_text(json.dumps({"username": "someone", "key": "secret"}))
    assert credentials_source(environ) == str(xdg_json)

    assert credentials_source({**environ, "KAGGLE_CONFIG_DIR": str(kaggle_home / "elsewhere")}) is None
    assert credentials_source({**environ, "KAGGLE_USERNAME": "a", "KAGGLE_KEY": "b"}) == "KAGGLE_USERNAME/KAGGLE_KEY"
    assert credentials_source({**environ, "KAGGLE_API_TOKEN": "t"}) == "KAGGLE_API_TOKEN"


def fetch_command(tmp_path: Path, *options: str) -> list[str]:
    """Return the command line of `compkit fetch` of the tiny competition into tmp_path/work."""
    folder = tmp_path / "competitions" / TINY_SLUG
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "competition.toml").write_text(TINY_CONFIG)
    return [sys.executable, "-m", "compkit.cli", "fetch", "-c", str(folder), "--workspace", str(tmp_path / "work"),
            *options]


def slow_download(served: KaggleTestServer, tiny_files: dict[str, bytes]) -> None:
    """Make the archive of the tiny competition take about a second to download."""
    big = {**tiny_files, "train_images/big.jpg": random.Random(0).randbytes(3 << 20)}
    served.add_competition(TINY_SLUG, big).chunk_delay = 0.02


def wait_for(condition, *, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_second_fetch_fails_at_once_while_the_first_runs_and_the_first_succeeds(
    served, tiny_config, tiny_files, tmp_path, workspace
):
    slow_download(served, tiny_files)
    first = subprocess.Popen(fetch_command(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any(workspace.root.glob(".fetch-*")))

    with pytest.raises(CompkitError, match=rf"^another compkit fetch is running \(pid {first.pid}\); it holds "
                                           rf"{workspace.stage_lock('fetch')}$"):
        fetch_competition(tiny_config, workspace)

    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert {name: (workspace.data_dir / name).read_bytes() for name in tiny_files} == tiny_files
    assert sorted(p.name for p in workspace.root.iterdir()) == ["data", "data.manifest.json"]


def test_fetch_after_a_kill_9_removes_what_the_killed_fetch_left_even_when_data_is_up_to_date(
    served, tiny_config, tiny_files, tmp_path, workspace
):
    slow_download(served, tiny_files)
    fetch_competition(tiny_config, workspace)
    killed = subprocess.Popen(fetch_command(tmp_path, "--force"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: any(workspace.root.glob(".fetch-*/download/*")))
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    old_data = workspace.root / ".data.tmp-0123456789ab"  # as a kill -9 during the swap leaves the old data/
    old_data.mkdir()
    (old_data / "train.csv").write_bytes(tiny_files["train.csv"])
    assert any(workspace.root.glob(".fetch-*"))

    result = fetch_competition(tiny_config, workspace)

    assert result.skipped
    assert sorted(p.name for p in workspace.root.iterdir()) == ["data", "data.manifest.json"]
