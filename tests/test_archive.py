"""Safe zip extraction: hostile members are refused before anything is written, and data/ is kept."""

from __future__ import annotations

import shutil
import stat
import warnings
import zipfile
from pathlib import Path

import pytest
from conftest import TINY_SLUG

from compkit.data.fetch import fetch_competition
from compkit.data.sources.archive import extract_zip
from compkit.errors import DataError
from compkit.workspace import Workspace


def write_zip(path: Path, members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as bundle, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Duplicate name", UserWarning)  # hostile archives repeat names
        for info, content in members:
            bundle.writestr(info, content)
    return path


def symlink_member(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix, so external_attr carries the file type
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def absolute_member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("placeholder")
    info.filename = name  # ZipInfo() strips a leading slash; hostile archives keep it
    return info


HOSTILE_MEMBERS = {
    "absolute path": (absolute_member("/tmp/compkit-evil.txt"), b"evil", "absolute path"),
    "parent folder": ("../evil.txt", b"evil", r"path leaves the extraction folder \('..'\)"),
    "nested parent folder": ("train_images/../../evil.txt", b"evil", "path leaves the extraction folder"),
    "symbolic link": (symlink_member("train_images/link.jpg", "/etc/passwd"), b"/etc/passwd", "symbolic link"),
    "zip bomb": ("train_images/bomb.jpg", bytes(8 << 20), "compression ratio .* exceeds 250:1"),
    "duplicate name": ("train.csv", b"posting_id,image,title,label_group\np9,z.jpg,other,9\n",
                       "unpacks to the same path as the earlier member 'train.csv'"),
    "duplicate path": ("./train_images//a.jpg", b"\xff\xd8 other a",
                       "unpacks to the same path as the earlier member 'train_images/a.jpg'"),
}


@pytest.fixture
def workspace_with_data(tmp_path, tiny_config, tiny_files) -> Workspace:
    """A workspace whose data/ was fetched from a good local zip."""
    good = write_zip(tmp_path / "good.zip", list(tiny_files.items()))
    workspace = Workspace(tmp_path / "work" / TINY_SLUG)
    fetch_competition(tiny_config, workspace, source="local", path=good)
    return workspace


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", HOSTILE_MEMBERS)
def test_fetch_refuses_hostile_archive_member_and_keeps_data(
    case, tmp_path, tiny_config, tiny_files, workspace_with_data
):
    member, content, reason = HOSTILE_MEMBERS[case]
    name = member.filename if isinstance(member, zipfile.ZipInfo) else member
    hostile = write_zip(tmp_path / "hostile.zip", [*tiny_files.items(), (member, content)])
    before = snapshot(workspace_with_data.root)

    with pytest.raises(DataError, match=f"hostile.zip: refusing member '{name}': {reason}"):
        fetch_competition(tiny_config, workspace_with_data, source="local", path=hostile, force=True)

    assert snapshot(workspace_with_data.root) == before
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/compkit-evil.txt").exists()


@pytest.mark.parametrize("case", HOSTILE_MEMBERS)
def test_extract_zip_writes_nothing_when_a_member_is_refused(case, tmp_path, tiny_files):
    member, content, _ = HOSTILE_MEMBERS[case]
    hostile = write_zip(tmp_path / "hostile.zip", [*tiny_files.items(), (member, content)])
    destination = tmp_path / "out"

    with pytest.raises(DataError):
        extract_zip(hostile, destination)

    assert not destination.exists()


def test_extract_zip_refuses_archive_over_the_size_limit(tmp_path):
    archive = write_zip(tmp_path / "big.zip", [("a.bin", bytes(600)), ("b.bin", bytes(600))])

    with pytest.raises(DataError, match=r"big.zip: refusing member 'b.bin': archive unpacks to more than 1,000 B"):
        extract_zip(archive, tmp_path / "out", max_unpacked_bytes=1000)

    assert not (tmp_path / "out").exists()


def test_extract_zip_refuses_a_bomb_of_members_each_too_small_for_the_member_check(tmp_path):
    just_under_the_member_check = bytes((1 << 20) - 1)
    archive = write_zip(tmp_path / "bomb.zip", [(f"train_images/{i}.jpg", just_under_the_member_check)
                                                for i in range(80)])

    with pytest.raises(DataError, match=r"bomb.zip: refusing the archive: it unpacks to 80.0 MiB from .* KiB, "
                                        r"a compression ratio of [\d,]+:1 over 100:1 \(zip bomb\?\)$"):
        extract_zip(archive, tmp_path / "out")

    assert not (tmp_path / "out").exists()


def test_extract_zip_refuses_an_archive_that_would_not_leave_the_disk_its_margin(tmp_path):
    archive = write_zip(tmp_path / "data.zip", [(f"train_images/{i}.jpg", bytes(256 << 10)) for i in range(4)])
    free = shutil.disk_usage(tmp_path).free

    with pytest.raises(DataError, match=r"data.zip: refusing the archive: it unpacks to 1.0 MiB, but the disk of "
                                        rf"{tmp_path / 'out'} has [\d.,]+ \w+ free and [\d.,]+ \w+ must stay free$"):
        extract_zip(archive, tmp_path / "out", keep_free_bytes=free)

    assert not (tmp_path / "out").exists()
    assert extract_zip(archive, tmp_path / "out", keep_free_bytes=0).n_bytes == 1 << 20


def test_extract_zip_streams_members_into_folders(tmp_path, tiny_files):
    archive = write_zip(tmp_path / "good.zip", list(tiny_files.items()))
    written: list[int] = []

    extracted = extract_zip(archive, tmp_path / "out", on_bytes=written.append)

    assert extracted.n_files == len(tiny_files) and extracted.n_bytes == sum(written)
    assert {name: (tmp_path / "out" / name).read_bytes() for name in tiny_files} == tiny_files


def test_extract_zip_names_a_file_that_is_not_a_zip(tmp_path):
    not_zip = tmp_path / "data.zip"
    not_zip.write_bytes(b"definitely not a zip")

    with pytest.raises(DataError, match="data.zip: not a valid zip archive"):
        extract_zip(not_zip, tmp_path / "out")
