"""Cached artifacts are checked, not trusted: truncated or changed files make their stage damaged, and it is remade."""

import time
from pathlib import Path

import numpy as np
from test_cli_pipeline import invoke
from test_training import prepared

from compkit.config import load_config
from compkit.pipeline import run_pipeline
from compkit.progress import NO_PROGRESS
from compkit.retrieval.single import oof_neighbors
from compkit.stages import pipeline_stages
from compkit.status import stage_statuses
from compkit.training.loop import train_model_fold
from compkit.training.rows import model_fold_inputs
from compkit.workspace import Workspace, damaged_outputs, is_fresh, manifest_path, read_manifest


def truncate(path: Path, keep: int = 16) -> bytes:
    original = path.read_bytes()
    path.write_bytes(original[:keep])
    return original


def opened(tuned_workspace):
    folder, base = tuned_workspace
    config = load_config(str(folder))
    return folder, base, config, Workspace.for_competition(config.slug, base)


def test_every_manifest_records_its_files_sizes_and_hashes(tuned_workspace):
    _, _, config, workspace = opened(tuned_workspace)
    for stage in pipeline_stages(config, workspace):
        artifacts = [stage.artifact / "fold0"] if stage.name.startswith("embed") else [stage.artifact]
        for artifact in artifacts:
            outputs = read_manifest(artifact)["outputs"]
            assert outputs, stage.name
            for name, record in outputs.items():
                assert (artifact.parent / name).stat().st_size == record["bytes"]
                assert len(record["sha256"]) == 64
    assert damaged_outputs(workspace.root) == []


def test_truncated_embeddings_make_their_stage_damaged_and_run_remakes_them(tuned_workspace):
    folder, base, config, workspace = opened(tuned_workspace)
    oof = workspace.embedding_file("phash", 1, "oof").with_suffix(".npy")
    original = truncate(oof)
    states = {entry.stage: entry for entry in stage_statuses(config, workspace)}
    assert states["embed phash"].state == "damaged"
    assert str(oof) in states["embed phash"].detail and "16 bytes" in states["embed phash"].detail
    shown = invoke("status", "-c", folder, "--workspace", base)
    assert shown.exit_code == 0 and "damaged" in shown.output
    report = run_pipeline(config, workspace, trials=0)
    assert report.made == ["embed phash"]  # the same bytes again, so everything after it stays fresh
    assert oof.read_bytes() == original


def test_a_deleted_file_of_a_folder_artifact_is_damaged_not_fresh(tuned_workspace):
    _, _, config, workspace = opened(tuned_workspace)
    ids = workspace.embedding_file("tfidf-word", 0, "oof_ids").with_suffix(".npy")
    ids.unlink()
    state = next(s for s in stage_statuses(config, workspace) if s.stage == "embed tfidf-word")
    assert state.state == "damaged" and "is missing" in state.detail
    assert run_pipeline(config, workspace, trials=0).made == ["embed tfidf-word"]


def test_truncated_neighbour_cache_is_rebuilt_not_read(tuned_workspace):
    _, _, config, workspace = opened(tuned_workspace)
    model = config.model("phash")
    cache = workspace.neighbors_cache("phash", "all")
    original = oof_neighbors(config, model, workspace)
    truncate(cache)
    rebuilt = oof_neighbors(config, model, workspace)
    np.testing.assert_array_equal(rebuilt.indices, original.indices)
    assert damaged_outputs(workspace.root, verify=False) == []
    cache.write_bytes(cache.read_bytes()[:-8] + b"\0" * 8)  # same size, broken zip directory
    np.testing.assert_array_equal(oof_neighbors(config, model, workspace).indices, original.indices)


def test_truncated_tuned_ensemble_is_damaged_and_status_does_not_fail(tuned_workspace):
    folder, base, config, workspace = opened(tuned_workspace)
    truncate(workspace.tuned_ensemble, keep=5)
    shown = invoke("status", "-c", folder, "--workspace", base)
    assert shown.exit_code == 0, shown.output
    state = next(s for s in stage_statuses(config, workspace) if s.stage == "tune ensemble")
    assert state.state == "damaged"
    assert "tune ensemble" in run_pipeline(config, workspace, trials=0).made


def test_a_damaged_folds_or_data_manifest_says_damaged_not_missing(tuned_workspace):
    _, _, config, workspace = opened(tuned_workspace)
    for artifact, stage in ((workspace.folds_path, "folds"), (workspace.data_dir, "data")):
        truncate(manifest_path(artifact), keep=10)
        state = next(s for s in stage_statuses(config, workspace) if s.stage == stage)
        assert state.state == "damaged" and "unreadable" in state.detail, stage


def test_verify_finds_a_change_that_keeps_the_size_and_run_verify_remakes_it(tuned_workspace):
    folder, base, config, workspace = opened(tuned_workspace)
    oof = workspace.embedding_file("phash", 2, "oof").with_suffix(".npy")
    original = oof.read_bytes()
    oof.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    assert all(s.fresh for s in stage_statuses(config, workspace))  # sizes alone cannot see it
    checked = invoke("status", "-c", folder, "--workspace", base, "--verify")
    assert checked.exit_code == 1 and "sha256" in checked.output and "embed phash" in checked.output
    remade = invoke("run", "-c", folder, "--workspace", base, "--trials", "0", "--verify")
    assert remade.exit_code == 0, remade.output
    assert "set aside as oof.npy.damaged" in remade.output
    assert oof.read_bytes() == original  # its folder was made again whole
    assert invoke("status", "-c", folder, "--workspace", base, "--verify").exit_code == 0


class Log:
    def __init__(self):
        self.lines = []

    def log(self, message: str) -> None:
        self.lines.append(message)

    def task(self, *args, **kwargs):
        return NO_PROGRESS.task(*args, **kwargs)


def test_truncated_last_checkpoint_is_set_aside_and_the_fold_trains_again(tmp_path):
    config, workspace = prepared(tmp_path)
    model = config.model("cnn")
    first = train_model_fold(config, model, 0, workspace, device="cpu")
    best = workspace.best_checkpoint("cnn", 0).read_bytes()
    last = workspace.resume_checkpoint("cnn", 0)
    truncate(last, keep=100)
    assert not is_fresh(workspace.model_dir("cnn", 0), model_fold_inputs(config, model, 0, workspace))
    log = Log()
    again = train_model_fold(config, model, 0, workspace, device="cpu", progress=log)
    assert not again.skipped and again.best_score == first.best_score
    assert any("damaged checkpoint" in line and "set aside as last.pt.damaged" in line and "from scratch" in line
               for line in log.lines), log.lines
    assert last.with_name("last.pt.damaged").stat().st_size == 100
    assert workspace.best_checkpoint("cnn", 0).read_bytes() == best  # seeded: the same weights again
    assert train_model_fold(config, model, 0, workspace, device="cpu").skipped


def test_truncated_best_checkpoint_is_not_trusted_by_a_resume(tmp_path):
    config, workspace = prepared(tmp_path)
    model = config.model("cnn")
    train_model_fold(config, model, 0, workspace, device="cpu")
    best = workspace.best_checkpoint("cnn", 0)
    truncate(best, keep=64)
    log = Log()
    again = train_model_fold(config, model, 0, workspace, device="cpu", progress=log)
    assert not again.skipped
    assert any("best.pt" in line and "from scratch" in line for line in log.lines), log.lines
    assert best.with_name("best.pt.damaged").is_file() and best.stat().st_size > 64


def written(root: Path) -> dict[str, int]:
    """Return every file's modification time in nanoseconds: what a second run must leave alone."""
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


STAGE_COMMANDS = [
    (["fetch"], "data"),
    (["folds"], "folds.csv"),
    (["embed"], "embeddings/phash/fold0/oof.npy"),
    (["tune-threshold", "--trials", "2"], "tuning/phash.json"),
    (["predict"], "submissions/phash.csv"),
    (["ensemble"], "submissions/ensemble.csv"),
]


def test_a_second_run_of_each_fresh_stage_writes_nothing_and_force_redoes_it(tuned_workspace):
    folder, base, _, workspace = opened(tuned_workspace)
    before = written(workspace.root)
    for command, _ in STAGE_COMMANDS:
        again = invoke(*command, "-c", folder, "--workspace", base)
        assert again.exit_code == 0, (command, again.output)
        assert written(workspace.root) == before, command
    for command, artifact in STAGE_COMMANDS:
        started = time.time_ns()
        forced = invoke(*command, "-c", folder, "--workspace", base, "--force")
        assert forced.exit_code == 0, (command, forced.output)
        path = workspace.root / artifact
        files = [path, *path.rglob("*")] if path.is_dir() else [path]
        assert max(p.stat().st_mtime_ns for p in files) >= started, f"{command} --force rewrote nothing"


def test_folds_rewritten_from_the_same_settings_with_other_assignments_make_the_models_stale(tuned_workspace):
    """A compkit that deals folds differently rewrites folds.csv from unchanged settings: what was embedded
    on the old folds must not pass as fresh (its OOF rows were in training)."""
    import pandas as pd

    from compkit.workspace import write_csv, write_manifest

    folder, base, config, workspace = opened(tuned_workspace)
    states = {status.stage: status.state for status in stage_statuses(config, workspace)}
    assert all(state == "fresh" for state in states.values()), states
    folds = pd.read_csv(workspace.folds_path)
    settings = read_manifest(workspace.folds_path)["inputs"]
    write_csv(workspace.folds_path, folds.assign(fold=(folds["fold"] + 1) % workspace.fold_count()))
    write_manifest(workspace.folds_path, settings, rows=len(folds))

    states = {status.stage: status.state for status in stage_statuses(config, workspace)}

    assert states["folds"] == "fresh"
    assert {stage: state for stage, state in states.items() if stage.startswith("embed")} and all(
        state == "stale" for stage, state in states.items() if stage.startswith("embed")), states
