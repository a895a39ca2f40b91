"""`fetch --source local`: a folder (like /kaggle/input/<slug>) or a zip, copied or extracted atomically."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import TINY_CONFIG, TINY_SLUG, RecordingProgress, lock_held_elsewhere

from compkit.data.fetch import fetch_competition
from compkit.data.tables import data_inputs
from compkit.errors import ConfigError, DataError
from compkit.workspace import Workspace, is_fresh, read_manifest


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "work" / TINY_SLUG)


def zip_of(path: Path, files: dict[str, bytes], *, prefix: str = "") -> Path:
    with zipfile.ZipFile(path, "w") as bundle:
        for name, content in files.items():
            bundle.writestr(prefix + name, content)
    return path


def read_data(workspace: Workspace, names) -> dict[str, bytes]:
    return {name: (workspace.data_dir / name).read_bytes() for name in names}


def test_fetch_copies_a_local_folder(input_folder, tiny_config, tiny_files, workspace):
    progress = RecordingProgress()

    result = fetch_competition(tiny_config, workspace, source="local", path=input_folder, progress=progress)

    assert result.source == "local" and not result.skipped and result.n_files == len(tiny_files)
    assert read_data(workspace, tiny_files) == tiny_files
    assert is_fresh(workspace.data_dir, data_inputs(tiny_config, workspace))
    copy = progress.tasks[f"copying {TINY_SLUG}"]
    assert copy.completed == copy.total == sum(map(len, tiny_files.values()))
    assert read_manifest(workspace.data_dir)["origin"]["path"] == str(input_folder.resolve())


def test_second_fetch_of_an_unchanged_folder_is_skipped(input_folder, tiny_config, workspace):
    fetch_competition(tiny_config, workspace, source="local", path=input_folder)

    result = fetch_competition(tiny_config, workspace, source="local", path=input_folder)

    assert result.skipped


def test_fetch_copies_again_when_the_folder_changed(input_folder, tiny_config, workspace):
    fetch_competition(tiny_config, workspace, source="local", path=input_folder)
    (input_folder / "train_images" / "new.jpg").write_bytes(b"\xff\xd8 new")

    result = fetch_competition(tiny_config, workspace, source="local", path=input_folder)

    assert not result.skipped and (workspace.data_dir / "train_images" / "new.jpg").is_file()


def test_fetch_extracts_a_local_zip(tmp_path, tiny_config, tiny_files, workspace):
    archive = zip_of(tmp_path / f"{TINY_SLUG}.zip", tiny_files)

    result = fetch_competition(tiny_config, workspace, source="local", path=archive)
    again = fetch_competition(tiny_config, workspace, source="local", path=archive)

    assert not result.skipped and again.skipped
    assert read_data(workspace, tiny_files) == tiny_files


def test_fetch_lifts_the_files_of_a_zipped_folder(tmp_path, tiny_config, tiny_files, workspace):
    archive = zip_of(tmp_path / "download.zip", tiny_files, prefix=f"{TINY_SLUG}/")

    fetch_competition(tiny_config, workspace, source="local", path=archive)

    assert read_data(workspace, tiny_files) == tiny_files


def test_fetch_without_path_says_local_needs_one(tiny_config, workspace):
    with pytest.raises(DataError, match="--source local needs --path"):
        fetch_competition(tiny_config, workspace, source="local")


def test_fetch_names_a_missing_path(tmp_path, tiny_config, workspace):
    missing = tmp_path / "nowhere"

    with pytest.raises(DataError, match=f"^{missing}: not found$"):
        fetch_competition(tiny_config, workspace, source="local", path=missing)


def test_fetch_names_a_file_that_is_neither_folder_nor_zip(tmp_path, tiny_config, workspace):
    not_zip = tmp_path / "train.csv"
    not_zip.write_text("a,b\n")

    with pytest.raises(DataError, match=f"^{not_zip}: neither a folder nor a zip archive$"):
        fetch_competition(tiny_config, workspace, source="local", path=not_zip)


def test_folder_without_an_expected_file_is_refused_and_data_kept(input_folder, tiny_config, workspace):
    fetch_competition(tiny_config, workspace, source="local", path=input_folder)
    before = {p: p.read_bytes() for p in workspace.root.rglob("*") if p.is_file()}
    (input_folder / "test.csv").unlink()

    with pytest.raises(DataError, match=f"^{input_folder} has no file 'test.csv', which {TINY_SLUG} expects"):
        fetch_competition(tiny_config, workspace, source="local", path=input_folder)

    assert {p: p.read_bytes() for p in workspace.root.rglob("*") if p.is_file()} == before


def test_fetch_refuses_a_folder_that_holds_the_workspace(tmp_path, tiny_config, tiny_files):
    workspace = Workspace(tmp_path / "work" / TINY_SLUG)

    with pytest.raises(DataError, match="holds the workspace itself"):
        fetch_competition(tiny_config, workspace, source="local", path=tmp_path)

    assert sorted(p.name for p in workspace.root.iterdir()) == []


def test_path_is_refused_for_other_sources(input_folder, tiny_config, workspace):
    with pytest.raises(ConfigError, match="--path is for --source local"):
        fetch_competition(tiny_config, workspace, path=input_folder)


def test_fetch_while_another_fetch_runs_fails_in_one_line_and_touches_nothing(
    input_folder, tiny_config, tmp_path, workspace
):
    fetch_competition(tiny_config, workspace, source="local", path=input_folder)
    running_staging = workspace.fetch_scratch("0123456789ab") / "data"  # the running fetch's files
    running_staging.mkdir(parents=True)
    (running_staging / "train.csv").write_bytes(b"posting_id,image,title,label_group\n")
    before = {p: p.read_bytes() for p in workspace.root.rglob("*") if p.is_file()}
    competition = tmp_path / "competitions" / TINY_SLUG
    competition.mkdir(parents=True)
    (competition / "competition.toml").write_text(TINY_CONFIG)
    lock = workspace.stage_lock("fetch")

    with lock_held_elsewhere(lock) as holder:
        second = subprocess.run(
            [sys.executable, "-m", "compkit.cli", "fetch", "-c", str(competition), "--workspace",
             str(tmp_path / "work"), "--source", "local", "--path", str(input_folder), "--force"],
            capture_output=True, text=True,
        )
        after = {p: p.read_bytes() for p in workspace.root.rglob("*") if p.is_file() and p != lock}

    assert second.returncode == 1
    message = f"error: another compkit fetch is running (pid {holder.pid}); it holds {lock}"
    assert second.stderr.splitlines() == [message]
    assert after == before
