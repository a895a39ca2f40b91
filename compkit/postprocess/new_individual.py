"""Where `new_individual` enters an identify top 5: one tuned threshold, a tuned fraction, or one per species.

Per species (`[postprocess] new_individual_per_species = true`): a query's species is that of its top-ranked
individual (Happywhale's test images carry no species; a retrieved individual's species is right far more
often than the individual itself). Each species with at least `species_min_queries` OOF queries gets its
own threshold; the others keep the global one, tuned on every query. The objective is separable by species
(a species' threshold moves only its own queries' answers), so after Optuna has tuned the global threshold
each species' threshold is chosen exactly: the best of a fine grid over the threshold range (and the global
value itself, so no species scores less than with it), ties going to the value nearest the global one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from compkit.data.tables import load_train
from compkit.metrics import average_precision_at_5
from compkit.postprocess.top5 import NO_LABEL, insert_new_individual

SPECIES_PARAM = "species_threshold:{}"
GRID_POINTS = 401
TOP = 5


@dataclass(frozen=True)
class LabelSpecies:
    """The species of every label code (-1 where unknown) and the species' names."""

    codes: np.ndarray
    names: np.ndarray

    def of_queries(self, labels: np.ndarray) -> np.ndarray:
        """Return each query's species code: that of its top-ranked individual (-1 when it has none)."""
        top = labels[:, 0]
        return np.where(top >= 0, self.codes[np.clip(top, 0, None)], -1)


def label_species(labels: pd.Series, species: pd.Series) -> LabelSpecies:
    """Return the species of each label code of `pd.factorize(labels)`: that of its first row."""
    label_codes, _ = pd.factorize(labels)
    species_codes, names = pd.factorize(species)
    _, first_row = np.unique(label_codes, return_index=True)
    return LabelSpecies(species_codes[first_row].astype(np.int64), np.asarray(names, dtype=str))


def training_label_species(config, workspace) -> LabelSpecies | None:
    """Return the training labels' species when per-species thresholds are on, else None."""
    if not config.postprocess.new_individual_per_species:
        return None
    train = load_train(config, workspace)
    return label_species(train[config.columns.label], train[config.columns.species])


def new_individual_threshold(params: dict, scores: np.ndarray) -> float:
    """Return the similarity below which new_individual ranks first: tuned, or set by a target fraction.

    With `new_individual_fraction` the threshold is that quantile of the queries' best scores, so
    new_individual is the top-1 prediction for that fraction of the queries it is applied to.
    """
    if "new_individual_fraction" in params:
        return float(np.quantile(scores[:, 0], params["new_individual_fraction"]))
    return params["threshold"]


def query_thresholds(params: dict, labels: np.ndarray, scores: np.ndarray, species: LabelSpecies | None):
    """Return the new_individual threshold of every query (a float when all share one)."""
    threshold = new_individual_threshold(params, scores)
    if species is None or not any(key.startswith(SPECIES_PARAM.format("")) for key in params):
        return threshold
    by_species = np.array([params.get(SPECIES_PARAM.format(name), threshold) for name in species.names])
    query_species = species.of_queries(labels)
    return np.where(query_species >= 0, by_species[np.clip(query_species, 0, None)], threshold)


class Top5Objective:
    """params -> OOF MAP@5 of top-5 individuals with new_individual inserted; `top5(params)` ranks them."""

    def __init__(self, top5: Callable[[dict], tuple[np.ndarray, np.ndarray]], truth: np.ndarray,
                 new_individual: int, species: LabelSpecies | None = None) -> None:
        self.top5, self.truth, self.new_individual, self.species = top5, truth, new_individual, species

    def __call__(self, params: dict) -> float:
        labels, scores = self.top5(params)
        predictions = insert_new_individual(labels, scores, query_thresholds(params, labels, scores, self.species),
                                            self.new_individual)
        return float(average_precision_at_5(self.truth, predictions).mean())

    def with_species_thresholds(self, params: dict, *, bounds: tuple[float, float], min_queries: int) -> dict:
        """Return `params` plus the best threshold of every species with at least `min_queries` queries."""
        labels, scores = self.top5(params)
        query_species = self.species.of_queries(labels)
        grid = np.unique(np.append(np.linspace(*bounds, GRID_POINTS), params["threshold"])).astype(np.float32)
        precision = precision_by_threshold(labels, scores, self.truth, self.new_individual, grid)
        known = query_species >= 0
        n_species = len(self.species.names)
        one_hot = sp.csr_matrix((np.ones(known.sum()), (query_species[known], np.flatnonzero(known))),
                                shape=(n_species, len(labels)))
        totals = np.asarray(one_hot @ precision)
        best = totals >= totals.max(axis=1, keepdims=True) - 1e-9
        nearest = np.where(best, np.abs(grid - params["threshold"])[None, :], np.inf).argmin(axis=1)
        counts = np.bincount(query_species[known], minlength=n_species)
        tuned = {SPECIES_PARAM.format(name): float(grid[nearest[code]])
                 for code, name in enumerate(self.species.names) if counts[code] >= min_queries}
        return {**params, **tuned}


def precision_by_threshold(
    labels: np.ndarray, scores: np.ndarray, truth: np.ndarray, new_individual: int, grid: np.ndarray
) -> np.ndarray:
    """Return (n, G): each query's average precision@5 with new_individual inserted at each grid threshold.

    Equal to `insert_new_individual` then `average_precision_at_5` per threshold, for all of them at once:
    new_individual lands at position p = how many scores reach the threshold, pushing the labels from p on
    one rank down.
    """
    position = (scores[:, :, None] >= grid[None, None, :]).sum(axis=1)
    hit = (labels == truth[:, None]) & (labels != NO_LABEL)
    rank = np.where(hit.any(axis=1), hit.argmax(axis=1), TOP)[:, None]
    shifted = np.where(rank < position, rank, rank + 1)
    known = np.where(shifted < TOP, 1.0 / (shifted + 1), 0.0)
    new = np.where(position < TOP, 1.0 / (position + 1), 0.0)
    return np.where((truth == new_individual)[:, None], new, np.where(rank < TOP, known, 0.0))
