"""Shared fixtures. Fetch/Kaggle: an isolated home, the loopback Kaggle server, a tiny competition."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kaggle_server import KaggleTestServer

from compkit.config import CompetitionConfig, parse_config

TINY_SLUG = "tiny-match"
TINY_CONFIG = f"""
slug = "{TINY_SLUG}"
task = "match"
kaggle = "{TINY_SLUG}"
source = "kaggle"

[data]
train = "train.csv"
test = "test.csv"

[columns]
id = "posting_id"
label = "label_group"
image = "image"

[submission]
id_column = "posting_id"
prediction_column = "matches"
max_predictions = 50
"""


class RecordingProgress:
    """A Progress that remembers every task's total and completed amount."""

    def __init__(self) -> None:
        self.tasks: dict[str, RecordingTask] = {}
        self.messages: list[str] = []

    def task(self, description: str, total: float | None = None) -> RecordingTask:
        self.tasks[description] = RecordingTask(total)
        return self.tasks[description]

    def log(self, message: str) -> None:
        self.messages.append(message)


class RecordingTask:
    def __init__(self, total: float | None) -> None:
        self.total, self.completed = total, 0.0
        self.updates: list[tuple[float, float | None]] = []

    def advance(self, amount: float = 1) -> None:
        self.completed += amount

    def update(self, *, completed: float | None = None, total: float | None = None, info: str | None = None) -> None:
        self.completed = self.completed if completed is None else completed
        self.total = self.total if total is None else total
        self.updates.append((self.completed, self.total))


@pytest.fixture
def tiny_config() -> CompetitionConfig:
    return parse_config(TINY_CONFIG, source="tiny-match/competition.toml")


@pytest.fixture
def tiny_files() -> dict[str, bytes]:
    """The files of a tiny Shopee-shaped competition, as its zip would hold them."""
    return {
        "train.csv": b"posting_id,image,title,label_group\np1,a.jpg,red shoe,1\np2,b.jpg,red shoes,1\n",
        "test.csv": b"posting_id,image,title\nt1,c.jpg,blue hat\n",
        "sample_submission.csv": b"posting_id,matches\nt1,t1\n",
        "train_images/a.jpg": b"\xff\xd8 jpeg a",
        "train_images/b.jpg": b"\xff\xd8 jpeg b",
        "test_images/c.jpg": b"\xff\xd8 jpeg c",
    }


@pytest.fixture
def kaggle_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty home and Kaggle config folder, so the client never reads the real credentials."""
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    for name in list(os.environ):
        if name.startswith("KAGGLE_") or name.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / ".kaggle"))
    return home


@pytest.fixture
def kaggle_server(kaggle_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KaggleTestServer]:
    """The loopback Kaggle server, reached by the real client through http_proxy."""
    with KaggleTestServer() as server:
        monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
        monkeypatch.setenv("http_proxy", server.proxy_url)
        monkeypatch.setenv("HTTP_PROXY", server.proxy_url)
        yield server


@pytest.fixture
def kaggle_credentials(kaggle_server: KaggleTestServer, kaggle_home: Path) -> Path:
    """Write kaggle.json with the server's username and key, readable by its owner only."""
    path = kaggle_home / ".kaggle" / "kaggle.json"
    path.write_text(json.dumps({"username": kaggle_server.username, "key": kaggle_server.key}))
    path.chmod(0o600)
    return path
