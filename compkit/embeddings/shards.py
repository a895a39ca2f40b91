"""The test set embedded as shards, one task each on a Dask cluster (`[embeddings] test_shard_rows`).

A shard is the rows [start, stop) of the test set, embedded by one fold's model and saved as
`embeddings/<model>/.fold<k>-test-shards-<hash>/rows-<start>-<stop>.npy`, the hash being that of the fold's
embedding inputs (checkpoint included), so shards of another checkpoint are never mixed in. Shards are whole
embedding batches, so the rows are embedded in the same batches as in one pass and the result is the same
bytes. The fold's embedding task then takes the shards for the test matrix and removes their folder; a
killed shard task leaves the shards done so far, which a rerun keeps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compkit.config import NEURAL_KINDS, CompetitionConfig, ModelConfig
from compkit.data.tables import load_test
from compkit.embeddings.extract import embed_test_rows, embedding_batch_size, fold_embedder
from compkit.progress import NO_PROGRESS
from compkit.workspace import Workspace, atomic_path, fingerprint, remove_path


def shard_ranges(config: CompetitionConfig, model: ModelConfig, n_rows: int) -> list[tuple[int, int]]:
    """Return the test rows' shards for `model`: [] when the test set is embedded in one piece."""
    wanted = config.embeddings.test_shard_rows
    if model.kind not in NEURAL_KINDS or wanted <= 0 or n_rows <= wanted:
        return []
    batch = embedding_batch_size(model)
    rows = -(-wanted // batch) * batch
    return [(start, min(start + rows, n_rows)) for start in range(0, n_rows, rows)]


def shards_dir(workspace: Workspace, model: ModelConfig, fold: int, inputs: dict) -> Path:
    folder = workspace.embeddings_dir(model.name, fold)
    return folder.with_name(f".{folder.name}-test-shards-{fingerprint(inputs)[:12]}")


def _shard_file(folder: Path, start: int, stop: int) -> Path:
    return folder / f"rows-{start}-{stop}.npy"


def embed_test_shard(config: CompetitionConfig, model: ModelConfig, fold: int, workspace: Workspace,
                     inputs: dict, start: int, stop: int, *, device: str = "auto") -> Path:
    """Embed test rows [start, stop) with fold `fold`'s model (whose embeddings are made from `inputs`) into
    its shards folder; a shard already on disk is kept."""
    path = _shard_file(shards_dir(workspace, model, fold, inputs), start, stop)
    if path.is_file():
        return path
    build, options = fold_embedder(config, model, fold, workspace, device, NO_PROGRESS)
    vectors = embed_test_rows(config, model, fold, workspace, build, options, load_test(config, workspace),
                              start, stop)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary, temporary.open("wb") as handle:
        np.save(handle, vectors)
    return path


def collected_shards(config: CompetitionConfig, model: ModelConfig, fold: int, workspace: Workspace,
                     inputs: dict, n_rows: int) -> np.ndarray | None:
    """Return the test embeddings that the shards hold, or None unless every shard is on disk."""
    ranges = shard_ranges(config, model, n_rows)
    folder = shards_dir(workspace, model, fold, inputs)
    files = [_shard_file(folder, start, stop) for start, stop in ranges]
    if not files or not all(path.is_file() for path in files):
        return None
    return np.concatenate([np.load(path) for path in files])


def remove_shards(workspace: Workspace, model: ModelConfig, fold: int, inputs: dict) -> None:
    remove_path(shards_dir(workspace, model, fold, inputs))
