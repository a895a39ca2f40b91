"""Seeing what training does: plain progress lines without a terminal, log.csv and curves.png, and mid-epoch
checkpoints that a kill -9 within an epoch resumes from exactly (tiny real models, real subprocesses)."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_cli_pipeline import tiny_competition
from test_training import tiny_match, train_command

from compkit.config import TrainSettings, load_config
from compkit.data.fetch import fetch_competition
from compkit.data.folds import build_folds
from compkit.embeddings.cache import load_fold_embeddings
from compkit.errors import DamagedArtifact
from compkit.models.heads import ArcMarginHead, SupConHead
from compkit.progress import PlainProgress
from compkit.training import within_epoch
from compkit.training.checkpoint import load_state
from compkit.training.evaluate import held_out_loss
from compkit.training.loop import train_model_fold
from compkit.training.steps import EpochBatches
from compkit.workspace import Workspace, read_manifest

EPOCH_LINE = re.compile(r"^cnn fold 0  epoch (\d+)/(\d+)  loss [\d.]+  score [\d.]+  \d+ rows/s  "
                        r"\d+:\d\d elapsed, \d+:\d\d left$")


def prepared(tmp_path: Path, *, epochs: int, batch_size: int = 16, train: str = ""):
    """Return a tiny match competition (fetched, folded) whose CNN trains with `train` settings added."""
    folder = tiny_match(tmp_path, epochs=epochs)
    toml = folder / "competition.toml"
    toml.write_text(toml.read_text().replace("batch_size = 16,", f"batch_size = {batch_size}, {train}"))
    config = load_config(str(folder))
    workspace = Workspace.for_competition(config.slug, tmp_path / "work")
    fetch_competition(config, workspace)
    build_folds(config, workspace)
    return config, workspace, folder


def test_without_a_terminal_training_prints_one_flushed_line_per_epoch(tmp_path):
    epochs = 3
    _, workspace, competition = prepared(tmp_path, epochs=epochs)
    env = {key: value for key, value in os.environ.items() if key != "COMPKIT_PROGRESS"}
    process = subprocess.Popen(train_command(competition, tmp_path / "work"), env={**env, "OMP_NUM_THREADS": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines, alive_at_first_line = [], None
    for line in process.stderr:  # a pipe, no terminal: read while the process runs
        if EPOCH_LINE.match(line.rstrip("\n")):
            if alive_at_first_line is None:
                alive_at_first_line = process.poll() is None
                epochs_logged = len(pd.read_csv(workspace.training_log("cnn", 0)))
            lines.append(line.rstrip("\n"))
    assert process.wait() == 0
    assert [EPOCH_LINE.match(line).groups() for line in lines] == [(str(k), str(epochs)) for k in range(1, 4)]
    assert alive_at_first_line and epochs_logged < epochs, "the first line came while training went on (flushed)"


def test_plain_lines_within_a_long_epoch_come_at_most_once_per_interval():
    now = [0.0]
    stream = io.StringIO()
    task = PlainProgress(stream, interval_s=60, clock=lambda: now[0]).task("cnn fold 0", total=4)
    task.update(completed=1)  # resumed after one epoch: the rate counts from here
    for second in range(1, 200, 10):  # reports within epoch 2, every 10 s
        now[0] = second
        task.update(completed=1 + second / 200, info=f"batch {second}")
    now[0] = 200.0
    task.update(completed=2, info="epoch 2/4 done")
    lines = stream.getvalue().splitlines()
    assert [line.split("  ")[1] for line in lines] == ["batch 61", "batch 121", "batch 181", "epoch 2/4 done"]
    assert lines[-1] == "cnn fold 0  epoch 2/4 done  3:20 elapsed, 6:40 left"


def test_a_long_epoch_reports_its_batches_and_each_epoch_its_line(tmp_path, monkeypatch):
    monkeypatch.setattr(within_epoch, "REPORT_INTERVAL_S", 0.0)
    config, workspace, _ = prepared(tmp_path, epochs=2, batch_size=4)
    stream = io.StringIO()
    train_model_fold(config, config.model("cnn"), 0, workspace, device="cpu",
                     progress=PlainProgress(stream, interval_s=0))
    lines = [line for line in stream.getvalue().splitlines() if line.startswith("cnn fold 0  epoch")]
    within = [line for line in lines if " batch " in line]
    assert within and all(re.search(r"epoch [12]/2  batch \d+/\d+  loss [\d.]+  \d+ rows/s  ", line)
                          for line in within)
    assert [line.split("  ")[1] for line in lines if " batch " not in line] == ["epoch 1/2", "epoch 2/2"]
    assert lines.index(next(line for line in lines if "epoch 1/2  batch" in line)) < lines.index(
        next(line for line in lines if line.startswith("cnn fold 0  epoch 1/2  loss")))


def test_log_has_held_out_loss_and_wall_time_and_each_fold_draws_its_curves(tmp_path):
    config, workspace, _ = prepared(tmp_path, epochs=2)
    train_model_fold(config, config.model("cnn"), 0, workspace, device="cpu")
    log = pd.read_csv(workspace.training_log("cnn", 0))
    assert {"held_out_loss", "seconds", "finished_at"} <= set(log.columns)
    assert log["held_out_loss"].isna().all(), "match folds hold out whole products: no class the head knows"
    assert (log["seconds"] > 0).all() and pd.to_datetime(log["finished_at"]).is_monotonic_increasing
    curves = workspace.training_curves("cnn", 0)
    assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    outputs = read_manifest(workspace.model_dir("cnn", 0))["outputs"]
    assert outputs["fold0/curves.png"]["bytes"] == curves.stat().st_size


IDENTIFY_ARCFACE = """
[[models]]
name = "arc"
kind = "image"
backbone = "lcnet_050"
image_size = 32
embedding_dim = 32
head = { type = "subcenter_arcface", subcenters = 2, scale = 16.0, margin = 0.2 }
train = { epochs = 1, batch_size = 32, lr = 3e-3 }
"""


def test_identify_held_out_loss_is_the_heads_loss_on_the_known_individuals(tmp_path):
    folder = tiny_competition(tmp_path, "demo-identify")
    toml = folder / "competition.toml"
    text = re.sub(r"\[\[models\]\].*?(?=\n\[postprocess\])", "", toml.read_text(), flags=re.S)
    toml.write_text(text.replace("[postprocess]", IDENTIFY_ARCFACE + "\n[postprocess]"))
    config = load_config(str(folder))
    workspace = Workspace.for_competition(config.slug, tmp_path / "work")
    fetch_competition(config, workspace)
    build_folds(config, workspace)
    train_model_fold(config, config.model("arc"), 0, workspace, device="cpu")
    log = pd.read_csv(workspace.training_log("arc", 0))
    assert np.isfinite(log["held_out_loss"]).all() and (log["held_out_loss"] > 0).all()


def test_held_out_loss_counts_only_the_classes_the_head_was_trained_on():
    torch.manual_seed(0)
    head = ArcMarginHead(8, 5, scale=16.0, margin=0.2, subcenters=2)
    embeddings = torch.nn.functional.normalize(torch.randn(40, 8), dim=1).numpy()
    labels = np.arange(40) % 7  # codes 5 and 6: individuals absent from the training folds
    known = labels < 5
    expected = head.loss(torch.as_tensor(embeddings[known]), torch.as_tensor(labels[known])).item()
    assert held_out_loss(head, embeddings, labels, 5, chunk_rows=7) == pytest.approx(expected, rel=1e-5)
    assert np.isnan(held_out_loss(head, embeddings, labels + 5, 5))  # match: every held-out class unseen
    assert np.isnan(held_out_loss(SupConHead(), embeddings, labels, 5))


@pytest.mark.parametrize("sampler", ["random", "class_balanced"])
def test_an_epoch_resumed_at_a_batch_draws_the_rest_of_the_same_batches_and_seeds(sampler):
    settings = TrainSettings(batch_size=4, sampler=sampler, images_per_class=2)
    labels = np.arange(50) % 9
    batches = EpochBatches(labels, settings, seed=7)
    batches.set_epoch(3)
    whole = list(batches)
    batches.set_epoch(3, start_batch=5)
    assert len(batches) == len(whole) - 5 and list(batches) == whole[5:]
    batches.set_epoch(4)
    assert len(batches) == len(whole) and list(batches) != whole


def _trainer_tensors(state: dict) -> dict[str, torch.Tensor]:
    """Return every tensor of a resume state's weights, optimiser, scheduler and EMA, by a dotted key."""
    flat = {}

    def walk(prefix, value):
        if isinstance(value, torch.Tensor):
            flat[prefix] = value
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}", item)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                walk(f"{prefix}.{index}", item)
        elif isinstance(value, (int, float)):
            flat[prefix] = torch.tensor(value)

    for part in ("embedder", "head", "optimizer", "scheduler", "ema"):
        walk(part, state[part])
    return flat


def _kill_within_an_epoch(process: subprocess.Popen, last: Path, deadline_s: float = 180) -> dict:
    """SIGKILL `process` once last.pt holds a mid-epoch state (epoch >= 1, a few batches in); return that state.

    The process is stopped (SIGSTOP) while last.pt is read, so the state read is the one the kill leaves.
    """
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            state = load_state(last)
        except DamagedArtifact:  # cannot happen with atomic renames; read it again rather than fail the test
            state = None
        partial = (state or {}).get("partial")
        if partial and partial["epoch"] >= 1 and partial["batches_done"] >= 3:
            process.send_signal(signal.SIGSTOP)
            state = load_state(last)
            if state.get("partial"):
                process.send_signal(signal.SIGKILL)
                process.wait()
                return state
            process.send_signal(signal.SIGCONT)
        time.sleep(0.02)
    process.kill()
    raise AssertionError("the run never wrote a mid-epoch checkpoint to kill it after")


def test_kill_9_within_an_epoch_resumes_from_its_mid_epoch_checkpoint_exactly(tmp_path):
    epochs = 3
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # batches of 4 rows: about 12 per epoch, a mid-epoch checkpoint after every one
    settings = {"epochs": epochs, "batch_size": 4, "train": "checkpoint_minutes = 1e-6,"}
    _, reference_space, reference_competition = prepared(tmp_path / "reference", **settings)
    uninterrupted = subprocess.run(train_command(reference_competition, tmp_path / "reference" / "work"), env=env,
                                   capture_output=True, text=True)
    assert uninterrupted.returncode == 0, uninterrupted.stderr

    config, workspace, competition = prepared(tmp_path / "killed", **settings)
    process = subprocess.Popen(train_command(competition, tmp_path / "killed" / "work"), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_state = _kill_within_an_epoch(process, workspace.resume_checkpoint("cnn", 0))
    partial = killed_state["partial"]

    resumed = subprocess.run(train_command(competition, tmp_path / "killed" / "work"), env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming within epoch {partial['epoch']} after batch {partial['batches_done']}" in resumed.stderr
    manifest = read_manifest(workspace.model_dir("cnn", 0))
    assert (manifest["resumed_from_epoch"], manifest["resumed_from_batch"]) == (partial["epoch"],
                                                                                 partial["batches_done"])

    reference_log = pd.read_csv(reference_space.training_log("cnn", 0))
    final_log = pd.read_csv(workspace.training_log("cnn", 0))
    assert list(final_log["loss"]) == list(reference_log["loss"])
    assert list(final_log["score"]) == list(reference_log["score"])
    expected, final = (_trainer_tensors(load_state(space.resume_checkpoint("cnn", 0)))
                       for space in (reference_space, workspace))
    assert expected.keys() == final.keys()
    assert [key for key in expected if not torch.equal(expected[key], final[key])] == []
    best = [load_state(space.best_checkpoint("cnn", 0))["embedder"] for space in (reference_space, workspace)]
    assert all(torch.equal(best[0][key], best[1][key]) for key in best[0])
    reference_config = load_config(str(reference_competition))
    _, reference_oof, _ = load_fold_embeddings(reference_config, reference_config.model("cnn"), 0, reference_space)
    _, oof, _ = load_fold_embeddings(config, config.model("cnn"), 0, workspace)
    np.testing.assert_array_equal(np.asarray(oof), np.asarray(reference_oof))


def test_checkpoint_minutes_keeps_trained_folds_fresh(tmp_path):
    config, workspace, competition = prepared(tmp_path, epochs=1)
    train_model_fold(config, config.model("cnn"), 0, workspace, device="cpu")
    toml = competition / "competition.toml"
    toml.write_text(toml.read_text().replace("batch_size = 16,", "batch_size = 16, checkpoint_minutes = 30,"))
    changed = load_config(str(competition))
    assert changed.model("cnn").train.checkpoint_minutes == 30
    assert train_model_fold(changed, changed.model("cnn"), 0, workspace, device="cpu").skipped
