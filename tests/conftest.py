"""Shared fixtures. Fetch/Kaggle: an isolated home, the loopback Kaggle server, a tiny competition."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every test marked `gpu` where torch sees no CUDA GPU, saying so (the one place that decides it)."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    import torch

    if torch.cuda.is_available():
        return
    for item in gpu_tests:
        item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (marked gpu; torch sees none here)"))


@contextlib.contextmanager
def lock_held_elsewhere(path: Path) -> Iterator[subprocess.Popen]:
    """Hold the compkit lock file `path` in another process, as a running stage would, until the block ends."""
    script = ("import sys\nfrom compkit.locking import exclusive_lock\n"
              "with exclusive_lock(sys.argv[1], holder='test'):\n    print('held', flush=True)\n    sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", script, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        yield holder
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


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
def input_folder(tmp_path: Path, tiny_files: dict[str, bytes]) -> Path:
    """The tiny competition's files in a Kaggle-format folder, as a notebook's /kaggle/input holds them."""
    folder = tmp_path / "kaggle" / "input" / TINY_SLUG
    for name, content in tiny_files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


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


TUNED_SLUG = "tiny-demo-match"
DEMO_IDENTIFY = Path(__file__).resolve().parents[1] / "competitions" / "demo-identify" / "competition.toml"


def tiny_image_models(*models: tuple[str, str]) -> str:
    """Return [[models]] tables of one-epoch 32 px image models, one per (name, timm backbone)."""
    return "".join(f"""[[models]]
name = "{name}"
kind = "image"
backbone = "{backbone}"
image_size = 32
embedding_dim = 32
train = {{ epochs = 1, batch_size = 16, lr = 2e-3 }}

""" for name, backbone in models)


def tiny_identify(root: Path, slug: str, models: str, *, postprocess: str = "", by_threshold: bool = False) -> Path:
    """Return the folder of a small demo-identify competition (30 individuals, 2 folds) holding `models` (its
    [[models]] tables); `postprocess` lines open its [postprocess] table; `by_threshold` tunes new_individual
    by a similarity threshold instead of the demo's fraction."""
    import re

    text = re.sub(r"n_train_groups = \d+", "n_train_groups = 30", DEMO_IDENTIFY.read_text())
    text = re.sub(r"n_test_groups = \d+", "n_test_groups = 6", text)
    text = re.sub(r"image_size = \d+", "image_size = 32", text)
    text = text.replace("n_splits = 4", "n_splits = 2").replace('slug = "demo-identify"', f'slug = "{slug}"')
    head, _, tail = text.partition("[postprocess]")
    if by_threshold:
        tail = tail.replace('new_individual = "fraction"', 'new_individual = "threshold"')
    folder = root / "competitions" / slug
    folder.mkdir(parents=True)
    (folder / "competition.toml").write_text(head[: head.index("[[models]]")] + models + "[postprocess]\n"
                                             + postprocess + tail)
    return folder


def matcher_competition(root: Path, slug: str, *, n_train_groups: int = 24, n_test_groups: int = 8,
                        n_splits: int = 3) -> Path:
    """Write a tiny demo-match with its matchers only (TF-IDF, phash: nothing to train) under root/competitions."""
    import re

    text = (Path(__file__).resolve().parents[1] / "competitions" / "demo-match" / "competition.toml").read_text()
    for pattern, value in ((r"n_train_groups = \d+", f"n_train_groups = {n_train_groups}"),
                           (r"n_test_groups = \d+", f"n_test_groups = {n_test_groups}"),
                           (r"image_size = \d+", "image_size = 32"), (r"n_splits = \d+", f"n_splits = {n_splits}")):
        text = re.sub(pattern, value, text)
    text = re.sub(r'\[\[models\]\]\nname = "[^"]+"\nkind = "(?!tfidf|phash)\w+".*?(?=\n\[|\Z)', "", text, flags=re.S)
    text = text.replace('slug = "demo-match"', f'slug = "{slug}"\nkaggle = "{slug}"')
    folder = root / "competitions" / slug
    folder.mkdir(parents=True)
    (folder / "competition.toml").write_text(text)
    return folder


@pytest.fixture(scope="session")
def tuned_matcher_competition(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny demo-match with its matchers only (no training), run once through tune, predict and ensemble.

    Returns (competition folder, workspace base). Its config names a Kaggle competition, TUNED_SLUG. Tests
    copy the base (shutil.copytree) before they change anything in it.
    """
    from compkit.config import load_config
    from compkit.pipeline import run_pipeline
    from compkit.workspace import Workspace

    root = tmp_path_factory.mktemp("tuned-matchers")
    folder = matcher_competition(root, TUNED_SLUG)
    config = load_config(str(folder))
    run_pipeline(config, Workspace.for_competition(config.slug, root / "work"), trials=5)
    return folder, root / "work"


@pytest.fixture
def tuned_workspace(tuned_matcher_competition: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the session's tuned tiny demo-match workspace: (competition folder, workspace base)."""
    import shutil

    folder, base = tuned_matcher_competition
    shutil.copytree(base, tmp_path / "work")
    return folder, tmp_path / "work"
