"""Which training rows a fold trains and validates on, with labels encoded for the margin head."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from compkit.config import AUGMENT_VERSION, CompetitionConfig
from compkit.data.folds import FOLD_COLUMN, load_folds
from compkit.data.tables import load_train
from compkit.errors import ParameterError, StaleArtifactError
from compkit.schema import to_plain
from compkit.training.pseudo import pseudo_label_inputs, pseudo_labels
from compkit.workspace import Workspace, fingerprint, read_manifest


@dataclass(frozen=True)
class FoldRows:
    """Row positions of the training table for one fold, and their label codes.

    Training labels are 0..n_classes-1; held-out labels share that code space, and labels absent from the
    training folds (new individuals, unseen products) get codes >= n_classes.
    """

    frame: pd.DataFrame
    fold_of_row: np.ndarray
    train: np.ndarray
    valid: np.ndarray
    train_labels: np.ndarray
    valid_labels: np.ndarray
    n_classes: int
    classes: np.ndarray  # the label of each training code 0..n_classes-1


def fold_rows(config: CompetitionConfig, workspace: Workspace, fold: int) -> FoldRows:
    """Return the rows and label codes of `fold` (validation) and the other folds (training)."""
    frame = load_train(config, workspace)
    folds = load_folds(config, workspace)
    id_column = config.columns.id
    fold_of_row = frame[id_column].map(folds.set_index(id_column)[FOLD_COLUMN])
    if fold_of_row.isna().any():
        missing = frame[id_column][fold_of_row.isna()].iloc[0]
        hint = f"run: compkit folds -c {config.slug}"
        raise StaleArtifactError(f"{workspace.folds_path}: no fold for id {missing!r} ({hint})")
    fold_of_row = fold_of_row.to_numpy(dtype=np.int64)
    n_splits = workspace.fold_count()
    if not 0 <= fold < n_splits:
        raise ParameterError("fold", fold, f"must be between 0 and {n_splits - 1} (or 'all')")
    train = np.flatnonzero(fold_of_row != fold)
    valid = np.flatnonzero(fold_of_row == fold)
    labels = frame[config.columns.label].to_numpy()
    train_labels, classes = pd.factorize(labels[train])
    valid_labels = pd.Index(classes).get_indexer(labels[valid])
    unseen = valid_labels < 0
    valid_labels[unseen] = len(classes) + pd.factorize(labels[valid][unseen])[0]
    return FoldRows(frame, fold_of_row, train, valid, train_labels.astype(np.int64),
                    valid_labels.astype(np.int64), len(classes), np.asarray(classes))


def upstream_fingerprint(artifact, hint: str) -> str:
    manifest = read_manifest(artifact)
    if manifest is None:
        raise StaleArtifactError(f"{artifact}: missing ({hint})")
    return manifest["fingerprint"]


def folds_fingerprint(config: CompetitionConfig, workspace: Workspace) -> str:
    """Return the fingerprint of folds.csv as what it holds: the settings it was made from and its bytes.

    The settings alone would not do: a compkit that deals folds differently rewrites folds.csv from the same
    settings, and models trained on the old folds would pass as fresh, their OOF rows seen in training.
    """
    fingerprint_of_settings = upstream_fingerprint(workspace.folds_path, f"run: compkit folds -c {config.slug}")
    outputs = read_manifest(workspace.folds_path).get("outputs")
    return fingerprint({"settings": fingerprint_of_settings, "outputs": outputs})


RESULT_NEUTRAL = ("checkpoint_minutes",)


def model_inputs(model) -> dict:
    """Return a model's config as its artifacts' fingerprints see it: without the train settings that cannot
    change a result, so changing those keeps trained folds fresh.

    `checkpoint_minutes` is left out (a resume is exact); `num_workers` is recorded as 0 whatever it is (every
    row's augmentation has its own seed), the value fingerprints held before it became result-neutral.
    """
    plain = to_plain(model)
    if plain.get("pseudo_label", 0) is None:  # recorded only when set, as fingerprints were before it existed
        del plain["pseudo_label"]
    if isinstance(plain.get("train"), dict):
        plain["train"] = {key: value for key, value in plain["train"].items() if key not in RESULT_NEUTRAL}
        if "num_workers" in plain["train"]:
            plain["train"]["num_workers"] = 0
    return plain


def model_fold_inputs(config: CompetitionConfig, model, fold: int, workspace: Workspace) -> dict:
    """Return what a trained model-fold is made from: model config, data and folds fingerprints, fold."""
    return {
        "model": model_inputs(model),
        "fold": fold,
        "task": config.task,
        "columns": to_plain(config.columns),
        "selection": {"max_matches": config.postprocess.max_matches, "top_n": config.postprocess.top_n},
        "data": upstream_fingerprint(workspace.data_dir, f"run: compkit fetch -c {config.slug}"),
        "folds": folds_fingerprint(config, workspace),
        **_pseudo_label_inputs(config, model, workspace),
        **({"augment_version": AUGMENT_VERSION} if model.kind == "image" else {}),
    }


def _pseudo_label_inputs(config: CompetitionConfig, model, workspace: Workspace) -> dict:
    settings = getattr(model, "pseudo_label", None)  # only when set: other models' fingerprints stay as they were
    return {} if settings is None else {"pseudo_label": pseudo_label_inputs(config, workspace, settings)}


def training_fold_rows(config: CompetitionConfig, workspace: Workspace, model, fold: int) -> FoldRows:
    """Return the rows `model` trains and validates on in `fold`: `fold_rows`, plus its pseudo-labelled test
    rows (`pseudo_label`) among the training rows."""
    rows = fold_rows(config, workspace, fold)
    settings = getattr(model, "pseudo_label", None)
    if settings is None:
        return rows
    return with_pseudo_labels(rows, pseudo_labels(config, workspace, settings), config.columns.label)


def with_pseudo_labels(rows: FoldRows, pseudo: pd.DataFrame, label_column: str) -> FoldRows:
    """Return the fold's rows with the pseudo-labelled rows of its training individuals added to its training
    rows (appended to the table as fold -1); validation rows and classes are unchanged."""
    codes = pd.Index(rows.classes).get_indexer(pseudo[label_column].to_numpy())
    kept = pseudo[codes >= 0]
    start = len(rows.frame)
    frame = pd.concat([rows.frame, kept[[column for column in rows.frame.columns if column in kept]]],
                      ignore_index=True)
    return dataclasses.replace(
        rows, frame=frame, fold_of_row=np.concatenate([rows.fold_of_row, np.full(len(kept), -1)]),
        train=np.concatenate([rows.train, np.arange(start, start + len(kept))]),
        train_labels=np.concatenate([rows.train_labels, codes[codes >= 0]]).astype(np.int64),
    )
