"""Safe zip extraction: every member is checked before a byte is written, then streamed to disk."""

from __future__ import annotations

import shutil
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from compkit.data.sources import human_size
from compkit.errors import DataError

DEFAULT_MAX_UNPACKED_BYTES = 64 * 2**30
# Deflate tops out near 1032:1; real competition files (CSV, JPEG) stay far below 100:1.
DEFAULT_MAX_COMPRESSION_RATIO = 250
RATIO_CHECK_MIN_BYTES = 1 << 20
# The whole archive's ratio catches a bomb of many members each under RATIO_CHECK_MIN_BYTES. Images barely
# compress and CSVs of ids and text stay near 10:1, so 100:1 is far from real data; an archive unpacking to
# less than 64 MiB is harmless whatever its ratio.
DEFAULT_MAX_ARCHIVE_RATIO = 100
ARCHIVE_RATIO_MIN_BYTES = 64 << 20
# Left free on the destination's disk after extraction: 1 GiB, or a tenth of the free space when that is less.
KEEP_FREE_BYTES = 1 << 30
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Extracted:
    n_files: int
    n_bytes: int


def extract_zip(
    archive: Path,
    destination: Path,
    *,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
    max_compression_ratio: float = DEFAULT_MAX_COMPRESSION_RATIO,
    max_archive_ratio: float = DEFAULT_MAX_ARCHIVE_RATIO,
    keep_free_bytes: int | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> Extracted:
    """Return the count and size of the files extracted from `archive` into `destination`.

    Refuses (DataError naming the archive, and the member when one is to blame) absolute paths, `..`
    components, links and other special files, two members unpacking to the same path, a total unpacked size
    over `max_unpacked_bytes` or over the destination disk's free space less `keep_free_bytes` (default: 1 GiB,
    or a tenth of the free space when that is less), and zip-bomb compression ratios: a member's over
    `max_compression_ratio`, the whole archive's (its members' total size over the zip's size) over
    `max_archive_ratio` once it unpacks to more than 64 MiB. All members are checked before anything is
    written; on an error during writing the caller removes `destination`.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise DataError(f"{archive}: zip archive not found")
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = bundle.infolist()
            relative_paths = [
                _checked_member(archive, member, max_compression_ratio=max_compression_ratio) for member in members
            ]
            _check_duplicates(archive, members, relative_paths)
            _check_total_size(archive, members, max_unpacked_bytes)
            _check_whole_archive(archive, members, destination, max_archive_ratio=max_archive_ratio,
                                 keep_free_bytes=keep_free_bytes)
            destination.mkdir(parents=True, exist_ok=True)
            written = 0
            n_files = 0
            for member, relative in zip(members, relative_paths, strict=True):
                target = destination.joinpath(*relative.parts)
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(member) as source, open(target, "wb") as sink:
                    while chunk := source.read(CHUNK_BYTES):
                        written += len(chunk)
                        if written > max_unpacked_bytes:
                            raise _refusal(archive, member, f"unpacks to more than {human_size(max_unpacked_bytes)}")
                        sink.write(chunk)
                        if on_bytes is not None:
                            on_bytes(len(chunk))
                n_files += 1
    except zipfile.BadZipFile as error:
        raise DataError(f"{archive}: not a valid zip archive ({error})") from None
    except (zipfile.LargeZipFile, NotImplementedError, EOFError) as error:
        raise DataError(f"{archive}: cannot read the zip archive ({error})") from None
    except OSError as error:
        raise DataError(f"{archive}: cannot extract into {destination} ({error.strerror or error})") from error
    return Extracted(n_files=n_files, n_bytes=written)


def unpacked_size(archive: Path) -> int:
    """Return the total size the archive's directory declares for its members (0 if it is not a zip)."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            return sum(member.file_size for member in bundle.infolist())
    except (OSError, zipfile.BadZipFile):
        return 0


def _checked_member(archive: Path, member: zipfile.ZipInfo, *, max_compression_ratio: float) -> PurePosixPath:
    """Return the member's safe relative path, or raise DataError saying why it is refused."""
    name = member.filename.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _refusal(archive, member, "absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _refusal(archive, member, "path leaves the extraction folder ('..')")
    if not parts:
        raise _refusal(archive, member, "empty path")
    file_type = stat.S_IFMT(member.external_attr >> 16)
    if file_type == stat.S_IFLNK:
        raise _refusal(archive, member, "symbolic link")
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise _refusal(archive, member, "special file (device, fifo or socket)")
    if member.file_size >= RATIO_CHECK_MIN_BYTES:
        ratio = member.file_size / max(member.compress_size, 1)
        if ratio > max_compression_ratio:
            raise _refusal(
                archive, member, f"compression ratio {ratio:,.0f}:1 exceeds {max_compression_ratio:,.0f}:1 (zip bomb?)"
            )
    return PurePosixPath(*parts)


def _check_total_size(archive: Path, members: list[zipfile.ZipInfo], max_unpacked_bytes: int) -> None:
    total = 0
    for member in members:
        total += member.file_size
        if total > max_unpacked_bytes:
            raise _refusal(archive, member, f"archive unpacks to more than {human_size(max_unpacked_bytes)}")


def _check_duplicates(archive: Path, members: list[zipfile.ZipInfo], relative_paths: list[PurePosixPath]) -> None:
    """Raise DataError naming the first member that unpacks to the path of an earlier one (folders may repeat)."""
    first: dict[PurePosixPath, zipfile.ZipInfo] = {}
    for member, relative in zip(members, relative_paths, strict=True):
        earlier = first.setdefault(relative, member)
        if earlier is not member and not (member.is_dir() and earlier.is_dir()):
            raise _refusal(archive, member, f"unpacks to the same path as the earlier member {earlier.filename!r}")


def _check_whole_archive(
    archive: Path, members: list[zipfile.ZipInfo], destination: Path, *, max_archive_ratio: float,
    keep_free_bytes: int | None,
) -> None:
    """Raise DataError when the archive as a whole is a zip bomb or would not fit on the destination's disk."""
    total = sum(member.file_size for member in members)
    archive_bytes = max(archive.stat().st_size, 1)
    if total > ARCHIVE_RATIO_MIN_BYTES and total > max_archive_ratio * archive_bytes:
        raise DataError(
            f"{archive}: refusing the archive: it unpacks to {human_size(total)} from {human_size(archive_bytes)}, "
            f"a compression ratio of {total / archive_bytes:,.0f}:1 over {max_archive_ratio:,.0f}:1 (zip bomb?)"
        )
    free = _free_bytes(destination)
    keep = min(KEEP_FREE_BYTES, free // 10) if keep_free_bytes is None else keep_free_bytes
    if total > free - keep:
        raise DataError(
            f"{archive}: refusing the archive: it unpacks to {human_size(total)}, but the disk of {destination} "
            f"has {human_size(free)} free and {human_size(keep)} must stay free"
        )


def _free_bytes(folder: Path) -> int:
    """Return the free space of the disk that holds `folder`, or would once it is created."""
    folder = Path(folder).absolute()
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free


def _refusal(archive: Path, member: zipfile.ZipInfo, reason: str) -> DataError:
    return DataError(f"{archive}: refusing member {member.filename!r}: {reason}")
