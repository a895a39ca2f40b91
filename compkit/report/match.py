"""Where a match model is wrong, from its OOF CSV: per-fold scores, score by group size, worst pairs.

All scores are computed over every row at once (row F1 from `compkit.metrics`, pairs as sorted int64 keys);
only the few worst pairs picked for display become Python objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from compkit.metrics import label_sizes, row_f1
from compkit.report.content import Example, Section
from compkit.report.retrieved import RetrievedLists

# Group sizes are shown one by one up to 5, then in ranges (Shopee's groups run from 2 to 51).
SIZE_EDGES = (1, 2, 3, 4, 5, 6, 11, 21, 51)
SIZE_NAMES = ("1", "2", "3", "4", "5", "6-10", "11-20", "21-50", "51+")
# Beyond this many true (row, row) pairs the missed-pair list is not built (a label of 10,000 rows).
MAX_TRUE_PAIRS = 50_000_000


@dataclass(frozen=True)
class MatchRows:
    """The OOF rows of a match competition: truth as label codes, folds, and the OOF CSV's match lists."""

    codes: np.ndarray
    folds: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray


def match_sections(rows: MatchRows, lists: RetrievedLists, show, *, examples: int) -> tuple[list, list[Section]]:
    """Return (facts, sections) of the match report; `show(role, row, extra)` makes a card of one row."""
    f1 = row_f1(rows.codes, rows.indptr, rows.indices)
    predicted = np.diff(rows.indptr)
    false_pairs, false_similarity = _false_pairs(rows, lists)
    missed_pairs, missed_similarity, missed_rank = _missed_pairs(rows, lists)
    facts = [("mean row F1 (OOF)", f"{f1.mean():.6f}"), ("rows", f"{len(f1):,}"),
             ("false matches (pairs)", f"{len(false_pairs):,}"),
             ("missed matches (pairs)", "-" if missed_pairs is None else f"{len(missed_pairs):,}"),
             ("similarity", lists.measure)]
    sections = [
        Section("per-fold", "Per-fold scores", "Mean row F1 of each fold's rows, as the OOF CSV predicts them.",
                _per_fold(rows, f1, predicted)),
        Section("group-size", "Score by group size",
                "Rows grouped by the size of their true group (the row itself included).",
                _by_group_size(rows, f1, predicted)),
        Section("false-matches", "Worst false matches",
                f"Predicted pairs of two different products, most similar first ({len(false_pairs):,} in all).",
                examples=_pair_examples(false_pairs, false_similarity, None, show, examples, kind="false")),
    ]
    if missed_pairs is None:
        sections.append(Section("missed-matches", "Worst missed matches",
                                f"Not listed: more than {MAX_TRUE_PAIRS:,} true pairs."))
    else:
        order = np.lexsort((np.nan_to_num(missed_similarity, nan=-np.inf), ~np.isnan(missed_similarity)))
        sections.append(Section(
            "missed-matches", "Worst missed matches",
            f"Pairs of the same product not predicted, least similar first ({len(missed_pairs):,} in all); "
            "'not retrieved' pairs were beyond the neighbour lists' depth.",
            examples=_pair_examples(missed_pairs[order], missed_similarity[order], missed_rank[order], show,
                                    examples, kind="missed")))
    return facts, sections


def _per_fold(rows: MatchRows, f1: np.ndarray, predicted: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"fold": rows.folds, "f1": f1, "predicted": predicted,
                          "group": label_sizes(rows.codes)})
    table = frame.groupby("fold").agg(rows=("f1", "size"), mean_row_f1=("f1", "mean"),
                                      mean_predicted=("predicted", "mean"), mean_group_size=("group", "mean"))
    return table.reset_index()


def _by_group_size(rows: MatchRows, f1: np.ndarray, predicted: np.ndarray) -> pd.DataFrame:
    sizes = label_sizes(rows.codes)
    bucket = np.digitize(sizes, SIZE_EDGES) - 1
    frame = pd.DataFrame({"bucket": bucket, "f1": f1, "predicted": predicted, "code": rows.codes})
    table = frame.groupby("bucket").agg(rows=("f1", "size"), groups=("code", "nunique"), mean_row_f1=("f1", "mean"),
                                        mean_predicted=("predicted", "mean"))
    table.insert(0, "group_size", [SIZE_NAMES[b] for b in table.index])
    return table.reset_index(drop=True)


def _false_pairs(rows: MatchRows, lists: RetrievedLists) -> tuple[np.ndarray, np.ndarray]:
    """Return (pairs (p, 2) with a < b, their similarity) of every predicted pair of two different labels."""
    query = np.repeat(np.arange(len(rows.codes)), np.diff(rows.indptr))
    wrong = rows.codes[query] != rows.codes[rows.indices]
    pairs = _unordered(query[wrong], rows.indices[wrong], len(rows.codes))
    similarity = lists.pair_similarity(pairs[:, 0], pairs[:, 1])
    order = np.lexsort((pairs[:, 0], -np.nan_to_num(similarity, nan=-np.inf)))
    return pairs[order], similarity[order]


def _missed_pairs(rows: MatchRows, lists: RetrievedLists):
    """Return (pairs, similarity, rank) of each true pair either of whose rows does not predict the other."""
    n_rows = len(rows.codes)
    sizes = label_sizes(rows.codes)
    if int(sizes.astype(np.int64).sum()) > MAX_TRUE_PAIRS:  # sum of squared group sizes
        return None, None, None
    order = np.argsort(rows.codes, kind="stable")  # each label's rows side by side
    labels, first = np.unique(rows.codes[order], return_index=True)
    group_start = first[np.searchsorted(labels, rows.codes)]
    query = np.repeat(np.arange(n_rows), sizes)
    offset = np.arange(len(query)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    partner = order[group_start[query] + offset]
    keep = query != partner
    query, partner = query[keep], partner[keep]
    predicted = np.unique(np.repeat(np.arange(n_rows), np.diff(rows.indptr)) * n_rows + rows.indices)
    missed = ~np.isin(query * n_rows + partner, predicted)
    pairs = _unordered(query[missed], partner[missed], n_rows)
    similarity = lists.pair_similarity(pairs[:, 0], pairs[:, 1])
    _, rank = lists.similarity(pairs[:, 0], pairs[:, 1])
    return pairs, similarity, rank


def _unordered(a: np.ndarray, b: np.ndarray, n_rows: int) -> np.ndarray:
    """Return the distinct unordered pairs of rows (a, b) as an (p, 2) array with a < b."""
    low, high = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
    keys = np.unique(low * n_rows + high)
    return np.stack(np.divmod(keys, n_rows), axis=1) if len(keys) else np.zeros((0, 2), dtype=np.int64)


def _pair_examples(pairs, similarity, rank, show, limit: int, *, kind: str) -> tuple[Example, ...]:
    examples = []
    for index in range(min(limit, len(pairs))):
        a, b = (int(row) for row in pairs[index])
        value = similarity[index]
        heading = "not retrieved" if np.isnan(value) else f"similarity {value:.4f}"
        if rank is not None and rank[index] >= 0:
            heading += f", rank {int(rank[index]) + 1} in the first posting's list"
        examples.append(Example(f"{kind} match: {heading}", (show("posting", a), show("posting", b))))
    return tuple(examples)
