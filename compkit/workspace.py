"""The workspace layout (every artifact's path), atomic writes, manifests and fingerprints."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import compkit
from compkit.errors import DataError, StaleArtifactError
from compkit.names import path_component

WORKSPACE_ENV = "COMPKIT_WORKSPACE"
MANIFEST_SUFFIX = ".manifest.json"
FETCH_SCRATCH_PREFIX = ".fetch-"
BEST_CHECKPOINT = "best.pt"
RESUME_CHECKPOINT = "last.pt"
TRAINING_LOG = "log.csv"
RESOLVED_CONFIG = "resolved.json"


@dataclass(frozen=True)
class Workspace:
    """Paths of one competition's artifacts under `root` (default `./work/<slug>`)."""

    root: Path

    @classmethod
    def for_competition(cls, slug: str, base: Path | str | None = None) -> Workspace:
        """Return the workspace of `slug` under `base`, $COMPKIT_WORKSPACE or ./work."""
        base = base or os.environ.get(WORKSPACE_ENV) or Path.cwd() / "work"
        return cls(Path(base).expanduser().resolve() / path_component("slug", slug))

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

    def model_dir(self, model: str, fold: int) -> Path:
        return self.root / "models" / path_component("model", model) / f"fold{fold}"

    def best_checkpoint(self, model: str, fold: int) -> Path:
        return self.model_dir(model, fold) / BEST_CHECKPOINT

    def resume_checkpoint(self, model: str, fold: int) -> Path:
        return self.model_dir(model, fold) / RESUME_CHECKPOINT

    def training_log(self, model: str, fold: int) -> Path:
        return self.model_dir(model, fold) / TRAINING_LOG

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
    """Return a unique hidden temporary path in the same folder as `path` (same filesystem)."""
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")


def remove_path(path: Path) -> None:
    """Remove a file or folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temp_sibling(path)
    try:
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
    """Write the manifest of `artifact` (fingerprint of `inputs` plus `extra` facts) and return it."""
    full_inputs = stage_inputs(inputs)
    manifest = {
        "artifact": Path(artifact).name,
        "fingerprint": fingerprint(full_inputs),
        "inputs": full_inputs,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,
    }
    write_json(manifest_path(artifact), manifest)
    return manifest


def read_manifest(artifact: Path) -> dict[str, Any] | None:
    """Return the manifest of `artifact`, or None when the artifact or its manifest is missing."""
    path = manifest_path(artifact)
    if not path.is_file() or not Path(artifact).exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def is_fresh(artifact: Path, inputs: Mapping[str, Any]) -> bool:
    """Return True when `artifact` exists and was made from exactly `inputs`."""
    manifest = read_manifest(artifact)
    return manifest is not None and manifest.get("fingerprint") == fingerprint(stage_inputs(inputs))
