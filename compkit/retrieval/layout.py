"""Which training rows each fold's OOF queries search, how deep, and what the truth of each query is.

match: each validation fold's rows are searched against candidates. `candidates="all"` (the default, as the
top Shopee teams did) searches the whole training set's OOF embeddings, so the density of distractors is
like the test set's; `candidates="fold"` searches only the fold itself. Since no label group crosses folds,
every true match of a row lies in its own fold either way. TF-IDF vectors of different folds live in
different vocabularies, so "all" refits TF-IDF once on every training row (unsupervised, as competitors fit
it on the test set).
identify: each validation fold's images (embedded by that fold's model) search the other folds' images
embedded by the same model: the gallery that model saw in training, as the test images will.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from compkit.config import CompetitionConfig, ModelConfig
from compkit.data.tables import load_train
from compkit.errors import ConfigError
from compkit.models.tfidf import fit_transform
from compkit.postprocess.top5 import NEW_INDIVIDUAL

Candidates = Literal["all", "fold"]
CANDIDATES = ("all", "fold")


@dataclass(frozen=True)
class TrainingRows:
    """The training table, its labels as integer codes, and where each fold's OOF rows sit in it.

    `rows_of_fold[f]` are the table positions of fold f's OOF embedding rows, in their order;
    `fold_of_row` is each table row's fold, -1 for a row no fold's OOF embeddings cover.
    """

    table: pd.DataFrame
    labels: np.ndarray
    rows_of_fold: list[np.ndarray]
    fold_of_row: np.ndarray

    @property
    def covered(self) -> np.ndarray:
        return self.fold_of_row >= 0

    def gallery_rows(self, fold: int) -> np.ndarray:
        """Return the table rows an identify query of `fold` searches: every row outside the fold."""
        return np.setdiff1d(np.arange(len(self.table)), self.rows_of_fold[fold])


def training_rows(config: CompetitionConfig, workspace, fold_ids) -> TrainingRows:
    """Return the training rows laid out by fold, from each fold's OOF embedding ids (in fold order)."""
    train = load_train(config, workspace)
    position = pd.Index(train[config.columns.id])
    labels = pd.factorize(train[config.columns.label])[0].astype(np.int64)
    rows_of_fold = [position.get_indexer(ids) for ids in fold_ids]
    fold_of_row = np.full(len(train), -1, dtype=np.int64)
    for fold, rows in enumerate(rows_of_fold):
        fold_of_row[rows] = fold
    return TrainingRows(train, labels, rows_of_fold, fold_of_row)


def search_depth(config: CompetitionConfig) -> int:
    """Return how many neighbours a query keeps: max_matches (match) or top_n (identify)."""
    return config.postprocess.max_matches if config.task == "match" else config.postprocess.top_n


def resolve_candidates(config: CompetitionConfig, candidates: str) -> str:
    """Return the candidate set to search: as asked for match; identify always searches the other folds."""
    if candidates not in CANDIDATES:
        raise ConfigError(f"--candidates must be 'all' or 'fold', got {candidates!r}")
    return "fold" if config.task == "identify" else candidates


def other_candidates(candidates: str) -> str:
    """Return the other match candidate set ("fold" for "all" and back): both OOF scores are reported."""
    return "fold" if candidates == "all" else "all"


def identify_truth(labels: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Return each row's OOF truth: its label, or NEW_INDIVIDUAL when no other fold holds that label.

    A validation fold searches the gallery of every other row, so its row's individual is known there exactly
    when the label occurs in some other fold (rows of fold -1, not validated, belong to every gallery).
    """
    folds_per_label = pd.Series(folds).groupby(np.asarray(labels)).transform("nunique").to_numpy()
    return np.where(folds_per_label > 1, labels, NEW_INDIVIDUAL)


def all_rows_matrix(config, model: ModelConfig, train, rows_of_fold, folds_data):
    """Return one matrix of every training row: OOF embeddings, or TF-IDF refitted on all rows."""
    if model.kind == "tfidf":
        texts = train[config.columns.text].astype(str).tolist()
        return fit_transform(model, texts, texts)[0]
    width = np.asarray(folds_data[0][1]).shape[1]
    matrix = np.zeros((len(train), width), dtype=np.float32)
    for rows, (_, oof, _) in zip(rows_of_fold, folds_data, strict=True):
        matrix[rows] = oof
    return matrix


def renumbered(indices: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Return neighbour indices replaced by `rows[index]` (-1 stays -1)."""
    return np.where(indices >= 0, rows[np.clip(indices, 0, None)], -1)


def covered_positions(covered: np.ndarray) -> np.ndarray:
    """Return each table row's position among the covered rows only (what match OOF indices point into)."""
    return np.cumsum(covered) - 1
