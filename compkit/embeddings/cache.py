"""The embedding cache: OOF and test embeddings per model and fold, reused while fresh, loaded memory-mapped.

Layout under `embeddings/<model>/fold<k>/`: `oof_ids.npy` + `oof.npy` (sparse `oof.npz` for TF-IDF) for the
rows of fold k, `test.npy`/`test.npz` from that fold's model, and for identify tasks `train.npy`: every
training row embedded by fold k's model, the gallery that fold's queries (and the test images) search, and
for an identify model trained with a margin head `centres.npy` (classes x sub-centres x dim, unit rows) with
`centre_labels.npy`: the head's class centres, which kNN + head score fusion compares queries with.
identify: the fold models' test and gallery embeddings are joined on load, each fold's unit rows side by
side, scaled by 1/sqrt(folds), so that a dot product is the mean of the fold models' cosines: the scale the
OOF queries were scored on, one model each, so that the new_individual threshold tuned there carries over.
Fold models trained apart embed in spaces that do not line up (one test image's embeddings by two resnet-48
fold models of demo-identify have cosine 0.21), and the cosine of their mean adds cross-fold terms that
lift every similarity (real-identify, lite0-subcenter: new test images' top-1 median 0.62 against 0.54 on
OOF; joined, 0.53). match: the mean, renormalised (measured better there: OOF matches search every
training row, each embedded by its own fold's model); TF-IDF is refitted on all rows instead.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from compkit.config import NEURAL_KINDS, CompetitionConfig, ModelConfig, is_trained, is_zero_shot
from compkit.data.tables import load_test
from compkit.embeddings.shards import collected_shards, remove_shards
from compkit.errors import DamagedArtifact, StaleArtifactError
from compkit.progress import NO_PROGRESS, Progress
from compkit.training.rows import fold_rows, folds_fingerprint, model_inputs, upstream_fingerprint
from compkit.workspace import Workspace, atomic_path, embedding_stem, file_sha256, is_fresh, write_manifest


@dataclass(frozen=True)
class EmbeddingResult:
    model: str
    fold: int
    skipped: bool
    directory: Path


def fold_dir_inputs(config: CompetitionConfig, model: ModelConfig, fold: int, workspace: Workspace) -> dict:
    """Return what a fold's cached embeddings are made from (checkpoint hash for trained models)."""

    inputs = {
        "model": model_inputs(model),
        "fold": fold,
        "dtype": config.embeddings.dtype,
        "data": upstream_fingerprint(workspace.data_dir, f"run: compkit fetch -c {config.slug}"),
        "folds": folds_fingerprint(config, workspace),
    }
    if is_trained(model):
        run_dir = workspace.model_dir(model.name, fold)
        hint = f"run: compkit train -c {config.slug} --fold {fold} --model {model.name}"
        inputs["trained"] = upstream_fingerprint(run_dir, hint)
        inputs["checkpoint_sha256"] = file_sha256(workspace.best_checkpoint(model.name, fold))
    return inputs


def embed_model_fold(
    config: CompetitionConfig,
    model: ModelConfig,
    fold: int,
    workspace: Workspace,
    *,
    device: str = "auto",
    force: bool = False,
    progress: Progress = NO_PROGRESS,
) -> EmbeddingResult:
    """Write fold `fold`'s OOF and test embeddings for `model` unless they are fresh; return where they are."""
    directory = workspace.embeddings_dir(model.name, fold)
    inputs = fold_dir_inputs(config, model, fold, workspace)
    if not force and is_fresh(directory, inputs):
        return EmbeddingResult(model.name, fold, True, directory)
    rows = fold_rows(config, workspace, fold)
    test = load_test(config, workspace)
    train_ids = rows.frame[config.columns.id].to_numpy(dtype=str)
    with atomic_path(directory) as staging:
        staging.mkdir(parents=True)
        np.save(_npy(embedding_stem(staging, "oof_ids")), train_ids[rows.valid])
        gallery = None
        if model.kind in NEURAL_KINDS:
            sharded = collected_shards(config, model, fold, workspace, inputs, len(test))
            oof, test_vectors, gallery = _neural_embeddings(
                config, model, fold, workspace, rows, test, device, progress, test_vectors=sharded
            )
            if config.task == "identify" and is_trained(model):
                _save_centres(staging, workspace.best_checkpoint(model.name, fold))
        elif model.kind == "tfidf":
            oof, test_vectors = _tfidf_embeddings(config, model, rows, test)
        else:
            oof, test_vectors = _phash_embeddings(config, rows, test)
        _save_matrix(embedding_stem(staging, "oof"), oof, config.embeddings.dtype)
        _save_matrix(embedding_stem(staging, "test"), test_vectors, config.embeddings.dtype)
        if gallery is not None:
            _save_matrix(embedding_stem(staging, "train"), gallery, config.embeddings.dtype)
    write_manifest(directory, inputs, rows=len(rows.valid), test_rows=len(test))
    remove_shards(workspace, model, fold, inputs)
    return EmbeddingResult(model.name, fold, False, directory)


def _neural_embeddings(config, model, fold, workspace, rows, test, device, progress, test_vectors=None):
    """Return (OOF, test, gallery) embeddings of fold `fold`'s model; `test_vectors` given: the test set's, as
    its shards on a cluster embedded them (compkit.embeddings.shards)."""
    from compkit.embeddings.extract import embed_test_rows, fold_embedder
    from compkit.training.evaluate import embed_dataset

    build, options = fold_embedder(config, model, fold, workspace, device, progress)
    train_inputs = build.inputs(rows.frame, workspace.data_dir / config.data.train_images)
    oof = embed_dataset(build.embedder, train_inputs.dataset(rows.valid, rows.valid_labels, train=False),
                        description=f"{model.name} fold {fold} oof", **options)
    if test_vectors is None:
        test_vectors = embed_test_rows(config, model, fold, workspace, build, options, test, 0, len(test))
    gallery = None
    if config.task == "identify":
        every_row = np.arange(len(rows.frame))
        every_row_set = train_inputs.dataset(every_row, np.full(len(every_row), -1), train=False)
        description = f"{model.name} fold {fold} gallery"
        gallery = embed_dataset(build.embedder, every_row_set, description=description, **options)
    return oof, test_vectors, gallery


def _save_centres(staging: Path, checkpoint: Path) -> None:
    """Copy a margin head's class centres and labels out of a fold's best checkpoint (none for supcon)."""
    from compkit.training.checkpoint import load_state

    state = load_state(checkpoint)
    if "centres" in state:
        np.save(_npy(embedding_stem(staging, "centres")), state["centres"].numpy().astype(np.float32))
        np.save(_npy(embedding_stem(staging, "centre_labels")), np.asarray(state["centre_labels"], dtype=str))


def load_centres(config, model, fold: int, workspace: Workspace) -> tuple[np.ndarray, np.ndarray] | None:
    """Return (labels, centres) of fold `fold`'s margin head, or None when the model has none."""
    _require_fresh(config, model, fold, workspace)
    stem = workspace.embedding_file(model.name, fold, "centres")
    if not _npy(stem).is_file():
        return None
    labels = _load_matrix(workspace.embedding_file(model.name, fold, "centre_labels"), mmap=False)
    return labels, _load_matrix(stem, mmap=False)


def _tfidf_embeddings(config, model, rows, test):
    from compkit.models.tfidf import fit_transform

    texts = rows.frame[config.columns.text].astype(str).tolist()
    fit_texts = [texts[i] for i in rows.train]
    test_texts = test[config.columns.text].astype(str).tolist()
    return fit_transform(model, fit_texts, [texts[i] for i in rows.valid], test_texts)


def _phash_embeddings(config, rows, test):
    from compkit.models.phash import phash_vectors

    column = config.columns.phash
    return phash_vectors(rows.frame[column].to_numpy()[rows.valid]), phash_vectors(test[column].to_numpy())


def _npy(stem: Path) -> Path:
    return stem.with_suffix(".npy")


def _save_matrix(stem: Path, matrix, dtype: str) -> None:
    if sp.issparse(matrix):
        sp.save_npz(stem.with_suffix(".npz"), matrix.tocsr().astype(np.float32))
    else:
        np.save(stem.with_suffix(".npy"), np.asarray(matrix, dtype=np.dtype(dtype)))


def _load_matrix(stem: Path, *, mmap: bool = True):
    path = stem.with_suffix(".npz") if stem.with_suffix(".npz").is_file() else stem.with_suffix(".npy")
    try:
        if path.suffix == ".npz":
            return sp.load_npz(path).tocsr()
        return np.load(path, mmap_mode="r" if mmap else None)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise DamagedArtifact(path, f"unreadable ({str(error)[:100]}); compkit run --verify makes it again") from None


def _require_fresh(config, model, fold, workspace) -> Path:
    directory = workspace.embeddings_dir(model.name, fold)
    if not is_fresh(directory, fold_dir_inputs(config, model, fold, workspace)):
        raise StaleArtifactError(
            f"{directory}: embeddings missing or stale (run: compkit embed -c {config.slug} --model {model.name})"
        )
    return directory


def load_fold_embeddings(config, model, fold: int, workspace: Workspace):
    """Return (ids, oof matrix, test matrix) of one fold, memory-mapped where dense."""
    _require_fresh(config, model, fold, workspace)
    files = {part: workspace.embedding_file(model.name, fold, part) for part in ("oof_ids", "oof", "test")}
    return _load_matrix(files["oof_ids"], mmap=False), _load_matrix(files["oof"]), _load_matrix(files["test"])


def load_gallery(config, model, fold: int, workspace: Workspace) -> np.ndarray:
    """Return every training row embedded by fold `fold`'s model (identify tasks), memory-mapped."""
    _require_fresh(config, model, fold, workspace)
    return _load_matrix(workspace.embedding_file(model.name, fold, "train"))


def combined_gallery_embeddings(config, model, workspace: Workspace, folds: list[int]) -> np.ndarray:
    """Return the training rows embedded by every fold model, joined (identify tasks; see the module)."""
    return _fold_models_combined(config, [load_gallery(config, model, fold, workspace)
                                          for fold in _distinct(model, folds)])


def _distinct(model: ModelConfig, folds: list[int]) -> list[int]:
    """Return the folds whose models can differ: one where every fold embeds alike (zero-shot, pHash)."""
    return folds[:1] if model.kind == "phash" or is_zero_shot(model) else folds


def _fold_models_combined(config: CompetitionConfig, matrices: list) -> np.ndarray:
    """Return the fold models' embeddings of the same rows as one matrix: joined (identify) or their mean."""
    if config.task == "identify":
        return np.hstack([_unit_rows(matrix) for matrix in matrices]) / np.float32(np.sqrt(len(matrices)))
    total = None
    for matrix in matrices:
        total = np.asarray(matrix, dtype=np.float32) + (0 if total is None else total)
    return _unit_rows(total)


def _unit_rows(matrix) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def combined_test_embeddings(config, model, workspace: Workspace, folds: list[int]):
    """Return the test embedding of `model`: the fold models' combined as the module says (TF-IDF: refit)."""
    if model.kind == "tfidf":
        from compkit.data.tables import load_train
        from compkit.models.tfidf import fit_transform

        train = load_train(config, workspace)
        test = load_test(config, workspace)
        column = config.columns.text
        return fit_transform(model, train[column].astype(str).tolist(), test[column].astype(str).tolist())[0]
    return _fold_models_combined(config, [load_fold_embeddings(config, model, fold, workspace)[2]
                                          for fold in _distinct(model, folds)])
