"""Every stage of a small TF-IDF/phash competition killed with SIGKILL at seeded moments, then run again.

For each stage, a reference run is made uninterrupted; then the stage is started on a copy of the workspace
as it was before it, killed after a delay drawn (seeded) from the stage's own duration, and run again to the
end. Its artifacts must equal the reference byte for byte where the stage is deterministic (tuning is not:
the trials a killed study completed stay in it), and no scratch may be left.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import matcher_competition

from compkit.config import load_config
from compkit.status import stage_statuses
from compkit.workspace import MANIFEST_SUFFIX, Workspace

STAGES = [
    ("fetch", []),
    ("folds", []),
    ("embed", []),
    ("tune-threshold", ["--trials", "6"]),
    ("predict", []),
    ("ensemble", ["--tune", "--trials", "15"]),
]
NOT_DETERMINISTIC = ("tuning/",)  # studies keep the trials a killed run finished
# `ensemble --tune` writes its CSV with the weights of a study a kill interrupted: resumed, the study ends
# with the same number of trials but other ones (TPE draws from its history), so other weights may win.
TUNED_BY_STAGE = {"ensemble": ("submissions/ensemble.csv",)}
KILLS_PER_STAGE = 2
SEED = 12


def command(stage: str, extra: list[str], folder: Path, base: Path) -> list[str]:
    return [sys.executable, "-m", "compkit.cli", stage, "-c", str(folder), "--workspace", str(base), *extra]


def run_stage(stage: str, extra: list[str], folder: Path, base: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(command(stage, extra, folder, base), env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, f"{stage}: {done.stderr}"
    return time.perf_counter() - started


def killed_at(stage: str, extra: list[str], folder: Path, base: Path, delay: float) -> int | None:
    """Start the stage, SIGKILL it after `delay` seconds; return its exit code when it ended first."""
    process = subprocess.Popen(command(stage, extra, folder, base), env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        return process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return None


def artifacts(root: Path) -> dict[str, bytes]:
    """Return every artifact file's bytes; a manifest without its time of making (it differs by run)."""
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        if path.name.endswith(".lock"):
            continue
        if name.endswith(MANIFEST_SUFFIX):
            manifest = json.loads(path.read_text())
            manifest.pop("created_at", None)
            files[name] = json.dumps(manifest, sort_keys=True).encode()
        else:
            files[name] = path.read_bytes()
    return files


def scratch(root: Path) -> list[str]:
    """Return the hidden leftovers of interrupted writes (lock files are not scratch: they stay by design)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(".*") if not p.name.endswith(".lock"))


# A kill between a trial's creation and its first heartbeat leaves a trial that is failed after the grace
# period only: short here, so that such a kill costs seconds.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "COMPKIT_TRIAL_HEARTBEAT_S": "1",
       "COMPKIT_TRIAL_GRACE_S": "3"}


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """The workspace after each stage of an uninterrupted run, and how long each stage took."""
    root = tmp_path_factory.mktemp("fault-injection")
    folder = matcher_competition(root, "fault-match", n_train_groups=16, n_test_groups=6, n_splits=2)
    base = root / "work"
    snapshots, durations = {"start": root / "snapshot-start"}, {}
    base.mkdir()
    shutil.copytree(base, snapshots["start"])
    for stage, extra in STAGES:
        durations[stage] = run_stage(stage, extra, folder, base)
        snapshots[stage] = root / f"snapshot-{stage}"
        shutil.copytree(base, snapshots[stage])
    return folder, snapshots, durations


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(STAGES)), ids=[stage for stage, _ in STAGES])
def test_a_stage_killed_and_run_again_ends_like_an_uninterrupted_run(references, tmp_path, index):
    folder, snapshots, durations = references
    stage, extra = STAGES[index]
    before = snapshots["start" if index == 0 else STAGES[index - 1][0]]
    slug = load_config(str(folder)).slug
    expected = artifacts(snapshots[stage] / slug) if (snapshots[stage] / slug).exists() else {}
    draw = random.Random(SEED + index)
    for attempt in range(KILLS_PER_STAGE):
        base = tmp_path / f"work-{attempt}"
        shutil.copytree(before, base)
        delay = draw.uniform(0.05, max(0.1, durations[stage] * 0.9))
        killed_at(stage, extra, folder, base, delay)
        run_stage(stage, extra, folder, base)
        workspace = base / slug
        assert scratch(workspace) == [], f"{stage} killed after {delay:.2f}s left scratch"
        got = artifacts(workspace)
        assert sorted(got) == sorted(expected), f"{stage} killed after {delay:.2f}s"
        differing = [name for name in expected if got[name] != expected[name]
                     and not name.startswith(NOT_DETERMINISTIC + TUNED_BY_STAGE.get(stage, ()))]
        assert differing == [], f"{stage} killed after {delay:.2f}s: {differing[:5]}"
        config = load_config(str(folder))
        states = {s.stage: s.state for s in stage_statuses(config, Workspace(workspace))}
        made = [name for name, _ in STAGES[: index + 1]]
        assert all(state == "fresh" for name, state in states.items() if _stage_of(name) in made), states


def _stage_of(status_stage: str) -> str:
    """Return the command that makes a status stage: "embed phash" -> embed, "tune ensemble" -> ensemble."""
    if status_stage in ("tune ensemble", "ensemble"):
        return "ensemble"
    first = status_stage.split(" ")[0]
    return {"data": "fetch", "tune": "tune-threshold"}.get(first, first)
