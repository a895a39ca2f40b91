import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from compkit.workspace import (
    Workspace,
    atomic_path,
    fingerprint,
    is_fresh,
    manifest_path,
    read_manifest,
    replace_directory,
    temp_sibling,
    write_csv,
    write_manifest,
    write_text,
)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def test_workspace_defaults_to_work_slug_under_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COMPKIT_WORKSPACE", raising=False)
    assert Workspace.for_competition("demo-match").root == tmp_path / "work" / "demo-match"
    monkeypatch.setenv("COMPKIT_WORKSPACE", str(tmp_path / "elsewhere"))
    assert Workspace.for_competition("demo-match").root == tmp_path / "elsewhere" / "demo-match"
    assert Workspace.for_competition("x", tmp_path / "explicit").root == tmp_path / "explicit" / "x"


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "a" / "file.txt"
    write_text(target, "first")
    write_text(target, "second")
    assert target.read_text() == "second"
    assert leftovers(target.parent) == []


def test_failed_atomic_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "table.csv"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_a_write_removes_this_machines_dead_temporaries_and_leaves_other_machines_alone(tmp_path):
    target = tmp_path / "oof.csv"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has ended
    here = temp_sibling(target).name.rsplit("-", 1)[1]
    names = {
        "this machine, dead": f".oof.csv.tmp-{pid}-0badc0de-{here}",
        "this machine, running": f".oof.csv.tmp-{os.getpid()}-0badc0de-{here}",
        "before hosts were named, dead": f".oof.csv.tmp-{pid}-0badc0de",
        "another machine, same dead pid": f".oof.csv.tmp-{pid}-0badc0de-gpu_box.cluster",
    }
    for name in names.values():
        (tmp_path / name).write_text("half")
    write_text(target, "done")
    assert leftovers(tmp_path) == sorted([names["this machine, running"], names["another machine, same dead pid"]])


def test_write_csv_is_atomic_and_indexless(tmp_path):
    target = tmp_path / "folds.csv"
    write_csv(target, pd.DataFrame({"id": ["a", "b"], "fold": [0, 1]}))
    assert target.read_text().splitlines() == ["id,fold", "a,0", "b,1"]


def test_replace_directory_swaps_and_keeps_old_on_failure(tmp_path):
    target = tmp_path / "data"
    target.mkdir()
    (target / "old.txt").write_text("old")
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    replace_directory(staging, target)
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    with pytest.raises(FileNotFoundError):
        replace_directory(tmp_path / "missing", target)
    assert [p.name for p in target.iterdir()] == ["new.txt"]


def test_fingerprint_ignores_key_order_and_sees_values():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_manifest_tells_fresh_from_stale(tmp_path):
    artifact = tmp_path / "folds.csv"
    artifact.write_text("x")
    inputs = {"data": "abc", "n_splits": 5}
    write_manifest(artifact, inputs, rows=1)
    assert manifest_path(artifact).is_file()
    assert read_manifest(artifact)["rows"] == 1
    assert read_manifest(artifact)["inputs"]["compkit_version"]
    assert is_fresh(artifact, inputs)
    assert not is_fresh(artifact, {**inputs, "n_splits": 4})
    os.remove(artifact)
    assert not is_fresh(artifact, inputs)
    assert read_manifest(artifact) is None
