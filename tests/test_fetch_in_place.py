"""`fetch --source local --in-place`: data/ refers to the folder's files (as /kaggle/input's), never copies them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import TINY_CONFIG, TINY_SLUG
from typer.testing import CliRunner

from compkit.cli.app import app
from compkit.config import load_config
from compkit.data.fetch import fetch_competition
from compkit.data.sources.local import is_read_only
from compkit.data.sources.synthetic.match import generate_match
from compkit.data.tables import data_inputs
from compkit.errors import ConfigError, DataError
from compkit.stages import artifact_state
from compkit.workspace import Workspace, damaged_outputs, is_fresh, read_manifest

runner = CliRunner()


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "work" / TINY_SLUG)


@pytest.fixture
def read_only(monkeypatch: pytest.MonkeyPatch):
    """Make the folders passed to it unwritable for this process, as a read-only mount is (even for root)."""
    folders: list[Path] = []
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and Path(path).resolve() in folders:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    return lambda folder: folders.append(Path(folder).resolve())


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Return {relative path: (size, mtime_ns)} of every file under `folder`: what "never written to" compares."""
    return {path.relative_to(folder).as_posix(): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(folder.rglob("*")) if path.is_file()}


def competition_folder(tmp_path: Path, text: str = TINY_CONFIG) -> Path:
    folder = tmp_path / "competitions" / TINY_SLUG
    folder.mkdir(parents=True)
    (folder / "competition.toml").write_text(text)
    return folder


def test_in_place_fetch_links_every_entry_and_copies_nothing(input_folder, tiny_config, tiny_files, workspace):
    before = listing(input_folder)

    result = fetch_competition(tiny_config, workspace, source="local", path=input_folder, in_place=True)

    entries = sorted(workspace.data_dir.iterdir())
    assert [entry.name for entry in entries] == sorted(os.listdir(input_folder))
    assert all(entry.is_symlink() and entry.resolve() == input_folder.resolve() / entry.name for entry in entries)
    assert {name: (workspace.data_dir / name).read_bytes() for name in tiny_files} == tiny_files
    assert result.n_files == len(tiny_files) and result.message.endswith(f"from {input_folder} (in place)")
    manifest = read_manifest(workspace.data_dir)
    assert manifest["origin"]["in_place"] is True
    # recorded by listing (size, mtime), not hashed: hashing a 62 GB dataset at each fetch is too slow
    assert all(set(record) == {"bytes", "mtime_ns"} for record in manifest["outputs"].values())
    assert len(manifest["outputs"]) == len(tiny_files)
    assert is_fresh(workspace.data_dir, data_inputs(tiny_config, workspace))
    assert fetch_competition(tiny_config, workspace, source="local", path=input_folder, in_place=True).skipped
    fetch_competition(tiny_config, workspace, source="local", path=input_folder, in_place=True, force=True)
    assert listing(input_folder) == before


def test_in_place_data_has_the_fingerprint_of_a_copy(input_folder, tiny_config, tmp_path):
    copied, linked = Workspace(tmp_path / "a" / TINY_SLUG), Workspace(tmp_path / "b" / TINY_SLUG)

    fetch_competition(tiny_config, copied, source="local", path=input_folder, in_place=False)
    fetch_competition(tiny_config, linked, source="local", path=input_folder, in_place=True)

    assert not (copied.data_dir / "train.csv").is_symlink()
    assert read_manifest(copied.data_dir)["fingerprint"] == read_manifest(linked.data_dir)["fingerprint"]


def test_a_read_only_folder_is_used_in_place_by_default_and_a_writable_one_copied(
    input_folder, tmp_path, read_only, tiny_files
):
    competition = competition_folder(tmp_path)
    writable = Path(shutil.copytree(input_folder, tmp_path / "writable"))
    read_only(input_folder)
    assert is_read_only(input_folder) and not is_read_only(writable)

    linked = runner.invoke(app, ["fetch", "-c", str(competition), "--workspace", str(tmp_path / "w1"),
                                 "--source", "local", "--path", str(input_folder)])
    copied = runner.invoke(app, ["fetch", "-c", str(competition), "--workspace", str(tmp_path / "w2"),
                                 "--source", "local", "--path", str(writable)])
    forced = runner.invoke(app, ["fetch", "-c", str(competition), "--workspace", str(tmp_path / "w3"),
                                 "--source", "local", "--path", str(input_folder), "--copy"])

    assert linked.exit_code == copied.exit_code == forced.exit_code == 0, linked.output + copied.output + forced.output
    assert (tmp_path / "w1" / TINY_SLUG / "data" / "train_images").is_symlink()
    assert "(in place)" in linked.output
    for base in ("w2", "w3"):
        data_dir = tmp_path / base / TINY_SLUG / "data"
        assert not any(path.is_symlink() for path in data_dir.rglob("*"))
        assert (data_dir / "train_images" / "a.jpg").read_bytes() == tiny_files["train_images/a.jpg"]


def test_in_place_files_are_checked_like_a_copy_and_data_kept_on_failure(tmp_path):
    config = load_config("demo-match")  # image models: every image is decoded by the check
    source = tmp_path / "input"
    generate_match(source, seed=3, n_train_groups=4, n_test_groups=2, image_size=32)
    workspace = Workspace(tmp_path / "work" / config.slug)
    fetch_competition(config, workspace, source="local", path=source, in_place=True)
    before = read_manifest(workspace.data_dir)
    image = sorted((source / "train_images").iterdir())[0]
    image.write_bytes(image.read_bytes()[:200])  # truncated

    with pytest.raises(DataError, match=f"{image.name!r}: cannot be decoded"):
        fetch_competition(config, workspace, source="local", path=source, in_place=True)

    assert read_manifest(workspace.data_dir) == before


def test_a_changed_original_makes_in_place_data_damaged_and_is_never_set_aside(input_folder, tiny_config, workspace):
    fetch_competition(tiny_config, workspace, source="local", path=input_folder, in_place=True)
    original = input_folder / "train_images" / "a.jpg"
    status = original.stat()
    os.utime(original, ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))  # rewritten, same size

    state, detail = artifact_state(workspace.data_dir, data_inputs(tiny_config, workspace))

    assert state == "damaged" and "was modified since it was recorded" in detail
    assert damaged_outputs(workspace.root, verify=True) == []  # `run --verify` renames nothing of the original
    assert original.is_file()
    assert not fetch_competition(tiny_config, workspace, source="local", path=input_folder, in_place=True).skipped
    assert artifact_state(workspace.data_dir, data_inputs(tiny_config, workspace))[0] == "fresh"


def test_in_place_refuses_a_zip_and_is_for_local_sources_only(tmp_path, input_folder, tiny_config, workspace):
    import zipfile

    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("train.csv", "posting_id\n")

    with pytest.raises(DataError, match="a zip is extracted, it cannot be used in place"):
        fetch_competition(tiny_config, workspace, source="local", path=archive, in_place=True)
    with pytest.raises(ConfigError, match="--in-place and --copy are for --source local"):
        fetch_competition(tiny_config, workspace, source="kaggle", in_place=True)


def test_in_place_lifts_the_entries_of_a_lone_folder(tmp_path, tiny_config, tiny_files, workspace):
    folder = tmp_path / "download"
    for name, content in tiny_files.items():
        (folder / TINY_SLUG / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / TINY_SLUG / name).write_bytes(content)

    fetch_competition(tiny_config, workspace, source="local", path=folder, in_place=True)

    assert not workspace.data_dir.is_symlink()
    assert (workspace.data_dir / "train.csv").resolve() == (folder / TINY_SLUG / "train.csv").resolve()
