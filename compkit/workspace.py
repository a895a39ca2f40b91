"""The workspace layout (every artifact's path), atomic writes, manifests and fingerprints."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import compkit
from compkit.errors import ConfigError, DataError, StaleArtifactError
from compkit.names import path_component

_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost"  # no "-": temporaries' names parse

WORKSPACE_ENV = "COMPKIT_WORKSPACE"
MANIFEST_SUFFIX = ".manifest.json"
DAMAGED_SUFFIX = ".damaged"
FETCH_SCRATCH_PREFIX = ".fetch-"
BEST_CHECKPOINT = "best.pt"
RESUME_CHECKPOINT = "last.pt"
TRAINING_LOG = "log.csv"
TRAINING_CURVES = "curves.png"
RESOLVED_CONFIG = "resolved.json"


@dataclass(frozen=True)
class Workspace:
    """Paths of one competition's artifacts under `root` (default `./work/<slug>`)."""

    root: Path

    @classmethod
    def for_competition(cls, slug: str, base: Path | str | None = None) -> Workspace:
        """Return the workspace of `slug` under `base`, $COMPKIT_WORKSPACE or ./work."""
        base = Path(base or os.environ.get(WORKSPACE_ENV) or Path.cwd() / "work").expanduser().resolve()
        root = base / path_component("slug", slug)
        for folder in (base, root, *base.parents):
            if folder.exists() and not folder.is_dir():
                raise ConfigError(f"workspace {base}: {folder} is a file, not a folder")
        return cls(root)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def folds_path(self) -> Path:
        return self.root / "folds.csv"

    def fold_count(self) -> int:
        """Return the number of folds of folds.csv, as its manifest records it (the one owner of the count)."""
        manifest = read_manifest(self.folds_path) or {}
        try:
            return int(manifest["inputs"]["folds"]["n_splits"])
        except (KeyError, TypeError, ValueError):
            state = "no folds yet" if not self.folds_path.exists() else "no readable manifest beside it"
            raise StaleArtifactError(f"{self.folds_path}: {state} (run: compkit folds)") from None

    def fold_range(self) -> list[int]:
        """Return every fold number of folds.csv: 0 .. fold_count() - 1."""
        return list(range(self.fold_count()))

    def fetch_scratch(self, token: str) -> Path:
        """Return a scratch folder of one fetch (staging and downloads), removed when the fetch ends."""
        return self.root / f"{FETCH_SCRATCH_PREFIX}{token}"

    def stage_lock(self, stage: str) -> Path:
        """Return the lock file held while `stage` (fetch, folds) writes shared state (see compkit.locking)."""
        return self.root / f".{stage}.lock"

    def model_dir(self, model: str, fold: int) -> Path:
        return self.root / "models" / path_component("model", model) / f"fold{fold}"

    def best_checkpoint(self, model: str, fold: int) -> Path:
        return self.model_dir(model, fold) / BEST_CHECKPOINT

    def resume_checkpoint(self, model: str, fold: int) -> Path:
        return self.model_dir(model, fold) / RESUME_CHECKPOINT

    def training_log(self, model: str, fold: int) -> Path:
        return self.model_dir(model, fold) / TRAINING_LOG

    def training_curves(self, model: str, fold: int) -> Path:
        return self.model_dir(model, fold) / TRAINING_CURVES

    def resolved_config(self, model: str, fold: int) -> Path:
        return self.model_dir(model, fold) / RESOLVED_CONFIG

    def embeddings_dir(self, model: str, fold: int) -> Path:
        return self.root / "embeddings" / path_component("model", model) / f"fold{fold}"

    def embedding_file(self, model: str, fold: int, part: str) -> Path:
        """Return the stem of one cached embedding matrix (`part`: oof, test, train; .npy or .npz added)."""
        return embedding_stem(self.embeddings_dir(model, fold), part)

    def neighbors_cache(self, model: str, candidates: str) -> Path:
        """Return a single model's cached OOF neighbour lists for one candidate set."""
        return self.tuning_dir / path_component("model", model) / f"neighbors-{candidates}.npz"

    def candidates_cache(self, model: str, candidates: str) -> Path:
        """Return a combined model's cached OOF candidate table for one candidate set."""
        return self.tuning_dir / path_component("model", model) / f"candidates-{candidates}.npz"

    def oof_csv(self, model: str) -> Path:
        return self.root / "oof" / f"{path_component('model', model)}.csv"

    def submission_csv(self, name: str) -> Path:
        return self.root / "submissions" / f"{path_component('model', name)}.csv"

    def top1_csv(self, model: str) -> Path:
        """Return an identify model's test top-1 individual and score per image (what pseudo-labels read)."""
        return self.root / "submissions" / "top1" / f"{path_component('model', model)}.csv"

    @property
    def tuning_dir(self) -> Path:
        return self.root / "tuning"

    def tuned_params(self, model: str) -> Path:
        return self.tuning_dir / f"{path_component('model', model)}.json"

    def score_plot(self, model: str) -> Path:
        """Return the PNG of a model's OOF score against its main tuned parameter."""
        return self.tuning_dir / f"{path_component('model', model)}.png"

    @property
    def tuned_ensemble(self) -> Path:
        return self.tuning_dir / "ensemble.json"

    @property
    def history_path(self) -> Path:
        """Every tuning and ensemble result, one JSON line each, appended and never rewritten (compkit.history)."""
        return self.tuning_dir / "history.jsonl"

    @property
    def history_lock(self) -> Path:
        return self.tuning_dir / "history.jsonl.lock"

    def report_dir(self, model: str) -> Path:
        """Return the folder of a model's error report (`compkit inspect`): index.html and its thumbnails."""
        return self.root / "reports" / path_component("model", model)

    @property
    def study_storage(self) -> Path:
        return self.tuning_dir / "optuna.sqlite3"

    @property
    def ledger_path(self) -> Path:
        return self.root / "submissions" / "ledger.csv"

    @property
    def ledger_lock(self) -> Path:
        """The ledger's lock file (the ledger itself is replaced on each write, so it cannot hold the lock)."""
        return self.root / "submissions" / "ledger.csv.lock"

    @property
    def submit_lock(self) -> Path:
        """Held (shared) by each submit while its ledger row is `uploading`; free when no submit is running."""
        return self.root / "submissions" / "submit.lock"

    @property
    def kernel_dir(self) -> Path:
        """The offline kernel of a code competition and the two datasets it reads (`compkit submit --kernel`)."""
        return self.root / "kernel"

    @property
    def kernel_folder(self) -> KernelFolder:
        return KernelFolder(self.kernel_dir)

    def relative(self, path: Path) -> str:
        """Return `path` relative to the workspace root (as manifests record it), or absolute when outside."""
        path = Path(path).resolve()
        try:
            return path.relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(path)

    def resolve(self, recorded: str) -> Path:
        """Return the path a manifest recorded with `relative`."""
        path = Path(recorded)
        return path if path.is_absolute() else self.root / path


@dataclass(frozen=True)
class KernelFolder:
    """The kernel folder's layout under `root` (the workspace's kernel/, or its staging copy)."""

    root: Path

    @property
    def notebook(self) -> Path:
        return self.root / "notebook"

    @property
    def wheels(self) -> Path:
        return self.root / "wheels"

    @property
    def weights(self) -> Path:
        return self.root / "weights"


def embedding_stem(folder: Path, part: str) -> Path:
    """Return the stem of the embedding matrix `part` in an embeddings folder (or in its staging copy)."""
    return Path(folder) / part


def temp_sibling(path: Path) -> Path:
    """Return a unique hidden temporary path in the same folder as `path` (same filesystem), naming this pid
    and this machine (`.<name>.tmp-<pid>-<hex>-<host>`: machines sharing the workspace keep theirs apart)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{_HOST}")


def temp_siblings(path: Path) -> list[Path]:
    """Return the `temp_sibling`s of `path` on disk: left behind by a write that was killed."""
    return sorted(Path(path).parent.glob(f".{Path(path).name}.tmp-*"))


def remove_path(path: Path) -> None:
    """Remove a file or folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_abandoned_temporaries(path: Path) -> None:
    """Remove the `temp_sibling`s of `path` made on this machine by a process that no longer runs (killed
    mid-write). Another machine's are left alone: its pids mean nothing here."""
    for leftover in temp_siblings(path):
        pid, _, rest = leftover.name.rsplit(".tmp-", 1)[1].partition("-")
        host = rest.partition("-")[2]  # empty in the names written before the host was added
        if host in ("", _HOST) and not (pid.isdigit() and is_running(int(pid))):
            remove_path(leftover)


def is_running(pid: int) -> bool:
    """Whether a process of this machine's process table has that pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def naming_path(path: Path) -> Iterator[None]:
    """Give an OSError raised inside without a file name (a failed write(): disk full, size limit) `path`'s."""
    try:
        yield
    except OSError as error:
        if error.filename is not None or error.errno is None:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from error


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on failure it is removed.

    Temporaries of `path` left by a killed process are removed first, so an interrupted write leaves no
    scratch once the artifact is written again.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temporaries(path)
    temporary = temp_sibling(path)
    try:
        with naming_path(temporary):
            yield temporary
        if path.is_dir() and temporary.is_dir():
            replace_directory(temporary, path)
        else:
            os.replace(temporary, path)
    finally:
        remove_path(temporary)


def replace_directory(staging: Path, target: Path) -> None:
    """Swap the folder `staging` into place at `target`, keeping the old one until the swap is done."""
    backup = temp_sibling(target)
    had_target = target.exists()
    if had_target:
        os.replace(target, backup)
    try:
        os.replace(staging, target)
    except BaseException:
        if had_target:
            os.replace(backup, target)
        raise
    remove_path(backup)


def write_bytes(path: Path, payload: bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(payload)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_csv(path: Path, frame: Any) -> None:
    """Write a pandas frame as CSV without its index, atomically."""
    with atomic_path(path) as temporary:
        frame.to_csv(temporary, index=False)


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: invalid JSON ({error})") from None


def fingerprint(inputs: Mapping[str, Any]) -> str:
    """Return a stable sha256 of JSON-ready `inputs` (key order does not matter)."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def file_sha256(path: Path, *, chunk_size: int = 1 << 20) -> str:
    """Return the sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_path(artifact: Path) -> Path:
    """Return where the manifest of a file or folder artifact lives: beside it."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


def stage_inputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Return `inputs` with the compkit version, which is part of every fingerprint."""
    return {**inputs, "compkit_version": compkit.__version__}


def write_manifest(artifact: Path, inputs: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """Write the manifest of `artifact` (fingerprint of `inputs`, its files' sizes and hashes, `extra` facts)."""
    full_inputs = stage_inputs(inputs)
    manifest = {
        "artifact": Path(artifact).name,
        "fingerprint": fingerprint(full_inputs),
        "inputs": full_inputs,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,
        "outputs": output_files(artifact),
    }
    write_json(manifest_path(artifact), manifest)
    return manifest


def output_files(artifact: Path) -> dict[str, dict[str, Any]]:
    """Return {path relative to the artifact's folder: {"bytes", "sha256"}} of every file the artifact is made of.

    A folder artifact is made of the files under it, less hidden ones (scratch) and the `.damaged` files a
    stage set aside; a file artifact of itself. A file reached through a symbolic link (data/ of a local
    folder used in place) is not compkit's: it is recorded by its listing, {"bytes", "mtime_ns"}, not
    hashed, since hashing a 62 GB dataset at each fetch would take longer than the run.
    """
    artifact = Path(artifact)
    if not artifact.is_dir():
        return {artifact.name: _file_record(artifact, linked=artifact.is_symlink())}
    outputs = {}
    linked_dirs = {str(artifact): artifact.is_symlink()}
    for directory, folders, names in os.walk(artifact, followlinks=True):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        linked = linked_dirs.pop(directory)
        linked_dirs.update((os.path.join(directory, name), linked or os.path.islink(os.path.join(directory, name)))
                           for name in folders)
        for name in sorted(names):
            if name.startswith(".") or name.endswith((DAMAGED_SUFFIX, MANIFEST_SUFFIX)):
                continue
            path = Path(directory, name)
            outputs[path.relative_to(artifact.parent).as_posix()] = _file_record(path, linked=linked or
                                                                                 path.is_symlink())
    return outputs


def _file_record(path: Path, *, linked: bool = False) -> dict[str, Any]:
    status = path.stat()
    if linked:
        return {"bytes": status.st_size, "mtime_ns": status.st_mtime_ns}
    return {"bytes": status.st_size, "sha256": file_sha256(path)}


def output_damage(artifact: Path, manifest: Mapping[str, Any], *, verify: bool = False) -> str | None:
    """Return how `artifact`'s files differ from those its manifest recorded (None: they match).

    Sizes (and, for a file recorded by its listing, mtimes) are compared on every call; contents (sha256)
    only when `verify`. A manifest written before compkit recorded outputs has nothing to compare.
    """
    return next((reason for _, reason in _damaged_files(artifact, manifest, verify=verify)), None)


def _damaged_files(artifact: Path, manifest: Mapping[str, Any], *, verify: bool) -> Iterator[tuple[Path, str]]:
    folder = Path(artifact).parent
    for name, record in (manifest.get("outputs") or {}).items():
        path = folder / name
        try:
            status = path.stat()
        except OSError:
            yield path, f"{path} is missing"
            continue
        size = status.st_size
        if size != record.get("bytes"):
            yield path, f"{path} is {size:,} bytes, its manifest recorded {record.get('bytes', 0):,}"
        elif "mtime_ns" in record:  # recorded by its listing (a linked file): never hashed
            if status.st_mtime_ns != record["mtime_ns"]:
                yield path, f"{path} was modified since it was recorded (its mtime differs from its manifest's)"
        elif verify and file_sha256(path) != record.get("sha256"):
            yield path, f"{path} changed since it was written (its sha256 differs from its manifest's)"


def damaged_outputs(root: Path, *, verify: bool = True) -> list[tuple[Path, str]]:
    """Return (file, why) for every file under `root` that differs from the manifest that recorded it.

    A file reached through a link to outside `root` (a local folder used in place) is left out: it is not
    compkit's to set aside.
    """
    damaged = []
    for path in sorted(Path(root).rglob(f"*{MANIFEST_SUFFIX}")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue  # a scratch or staging folder
        artifact = path.with_name(path.name[: -len(MANIFEST_SUFFIX)])
        manifest = read_manifest(artifact)
        if manifest is not None:
            damaged += [item for item in _damaged_files(artifact, manifest, verify=verify)
                        if item[0].exists() and not _outside(item[0], root)]
    return damaged


def _outside(path: Path, root: Path) -> bool:
    """Return True when `path` is, once links are followed, not under `root` (a local folder used in place)."""
    return not path.resolve().is_relative_to(Path(root).resolve())


def manifest_is_unreadable(artifact: Path) -> bool:
    """Return True when `artifact` has a manifest file that cannot be read as one (damaged, not missing)."""
    path = manifest_path(artifact)
    return path.is_file() and Path(artifact).exists() and read_manifest(artifact) is None


def set_aside(path: Path) -> Path:
    """Rename a damaged file to `<name>.damaged` beside it (replacing an older one) and return the new path."""
    target = Path(path).with_name(Path(path).name + DAMAGED_SUFFIX)
    os.replace(path, target)
    return target


def read_manifest(artifact: Path) -> dict[str, Any] | None:
    """Return the manifest of `artifact`, or None when the artifact or its manifest is missing or unreadable."""
    path = manifest_path(artifact)
    if not path.is_file() or not Path(artifact).exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def is_fresh(artifact: Path, inputs: Mapping[str, Any]) -> bool:
    """Return True when `artifact` was made from exactly `inputs` and its files still have their recorded sizes."""
    manifest = read_manifest(artifact)
    return (
        manifest is not None
        and manifest.get("fingerprint") == fingerprint(stage_inputs(inputs))
        and output_damage(artifact, manifest) is None
    )
