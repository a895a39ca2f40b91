"""What each OOF query retrieved, read from the cached neighbour lists (single) or candidate tables (combined).

The report shows a pair's similarity as the model saw it when it was tuned: a single model's cosine, a concat
or score model's weighted mean of its members' cosines (the tuned weights), a union model's best member's.
Rows are renumbered to the OOF CSV's rows (folds.csv order), so a pair of rows can be looked up directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from compkit.config import COMBINED_KINDS, CompetitionConfig, ModelConfig
from compkit.data.tables import load_train
from compkit.postprocess.combined import member_weights, weighted_lists
from compkit.retrieval.combined import oof_candidates
from compkit.retrieval.single import oof_neighbors
from compkit.tuning.tuned import TunedModel
from compkit.workspace import Workspace

MEASURES = {"union": "the best member's cosine", "concat": "the members' weighted mean cosine",
            "score": "the members' weighted mean cosine"}


@dataclass(frozen=True)
class RetrievedLists:
    """Each row's retrieved rows, best first (`rows`, -1 pads; rows the cache lacks are all -1).

    `similarities` are aligned with `rows` (-inf pads); `measure` says what they are.
    """

    rows: np.ndarray
    similarities: np.ndarray
    measure: str

    def similarity(self, queries: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (similarity, rank) of each (query, reference) row pair: NaN and -1 where it was not retrieved."""
        n_rows = len(self.rows)
        wanted = np.asarray(queries, dtype=np.int64) * n_rows + np.asarray(references, dtype=np.int64)
        listed_rows, listed_ranks = np.nonzero(self.rows >= 0)
        if len(listed_rows) == 0:
            return np.full(len(wanted), np.nan), np.full(len(wanted), -1)
        keys = listed_rows * n_rows + self.rows[listed_rows, listed_ranks]
        order = np.argsort(keys, kind="stable")
        keys, ranks, values = keys[order], listed_ranks[order], self.similarities[listed_rows, listed_ranks][order]
        position = np.clip(np.searchsorted(keys, wanted), 0, len(keys) - 1)
        found = keys[position] == wanted
        return np.where(found, values[position], np.nan).astype(np.float64), np.where(found, ranks[position], -1)

    def pair_similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Return each unordered pair's similarity: the larger of the two directions found, NaN when neither."""
        forward, _ = self.similarity(a, b)
        backward, _ = self.similarity(b, a)
        return np.fmax(forward, backward)


def retrieved_lists(
    config: CompetitionConfig, workspace: Workspace, model: ModelConfig, tuned: TunedModel, ids: np.ndarray
) -> RetrievedLists:
    """Return the model's cached OOF lists (computed when the cache is stale) on the rows of `ids`."""
    position = pd.Index(np.asarray(ids, dtype=str))
    if model.kind in COMBINED_KINDS:
        found = oof_candidates(config, model, workspace, candidates=tuned.candidates)
        table = found.table
        if model.kind == "union":
            similarities = table.similarities.max(axis=0)  # -inf where no member knows the pair
            order = np.argsort(-similarities, axis=1, kind="stable")
            similarities = np.take_along_axis(similarities, order, axis=1)
            indices = np.where(np.isfinite(similarities), np.take_along_axis(table.indices, order, axis=1), -1)
        else:
            weights = member_weights(model.members, model.weights, tuned.params)
            similarities, indices = weighted_lists(table, weights, table.indices.shape[1])
        query_ids, measure = found.ids, MEASURES[model.kind]
    else:
        found = oof_neighbors(config, model, workspace, candidates=tuned.candidates)
        similarities, indices, query_ids, measure = found.similarities, found.indices, found.ids, "cosine similarity"
    # match lists point into the covered query rows; identify lists into the whole training table
    reference_ids = query_ids if config.task == "match" else load_train(config, workspace)[config.columns.id]
    reference_rows = position.get_indexer(np.asarray(reference_ids, dtype=str))
    mapped = np.where(indices >= 0, reference_rows[np.clip(indices, 0, None)], -1)
    rows = np.full((len(ids), indices.shape[1]), -1, dtype=np.int64)
    values = np.full((len(ids), indices.shape[1]), -np.inf, dtype=np.float32)
    query_rows = position.get_indexer(np.asarray(query_ids, dtype=str))
    kept = query_rows >= 0
    rows[query_rows[kept]], values[query_rows[kept]] = mapped[kept], similarities[kept]
    return RetrievedLists(rows, np.where(rows >= 0, values, -np.inf).astype(np.float32), measure)
