"""Where an identify model is wrong, from its OOF CSV: MAP@5 per species and fold, new_individual precision
and recall at the tuned threshold, and the top-1 errors with the gallery images they were confused with.

Scores are computed over every query at once (`compkit.metrics`, pandas group-bys); only the errors picked
for display are looked at one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from compkit.metrics import average_precision_at_5, encode_ids
from compkit.report.content import Example, Section
from compkit.report.retrieved import RetrievedLists


@dataclass(frozen=True)
class IdentifyRows:
    """The OOF queries: their truth (an individual, or `new_individual` when no other fold holds it), the OOF
    CSV's top 5, each row's individual (what a gallery image shows), folds and species (None without)."""

    truth: np.ndarray
    predictions: np.ndarray
    individuals: np.ndarray
    folds: np.ndarray
    species: np.ndarray | None
    new_individual: str


def identify_sections(rows: IdentifyRows, lists: RetrievedLists, params: dict, show, *, examples: int):
    """Return (facts, sections) of the identify report; `show(role, row, extra)` makes a card of one row."""
    precision = average_precision_at_5(*encode_ids(rows.truth, rows.predictions))
    top1 = rows.predictions[:, 0] == rows.truth
    is_new = rows.truth == rows.new_individual
    facts = [("MAP@5 (OOF)", f"{precision.mean():.6f}"), ("queries", f"{len(precision):,}"),
             ("top-1 accuracy", f"{top1.mean():.4f}"), ("new_individual share (truth)", f"{is_new.mean():.4f}"),
             ("similarity", lists.measure)]
    frame = pd.DataFrame({"ap": precision, "top1": top1, "new": is_new, "fold": rows.folds})
    sections = []
    if rows.species is not None:
        frame["species"] = rows.species
        sections.append(Section("species", "MAP@5 per species", "Each species' OOF queries, most frequent first.",
                                _grouped(frame, "species").sort_values("queries", ascending=False)))
    sections.append(Section("new-individual", "new_individual at the tuned threshold", _threshold_text(params),
                            _new_individual_table(rows)))
    sections.append(Section("per-fold", "Per-fold scores", "MAP@5 of each fold's queries against the other folds.",
                            _grouped(frame, "fold")))
    errors = np.nonzero(~top1)[0]
    nearest = lists.similarities[errors, 0]
    errors = errors[np.lexsort((errors, -np.where(np.isfinite(nearest), nearest, -np.inf)))]
    sections.append(Section(
        "top1-errors", "Top-1 errors",
        f"Queries whose first answer is wrong ({len(errors):,} of {len(top1):,}), the most confident first "
        "(by the similarity of the nearest gallery image), with the gallery images of the answer and of the truth.",
        examples=tuple(_error_example(rows, lists, int(q), show) for q in errors[:examples])))
    return facts, sections


def _grouped(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    table = frame.groupby(key).agg(queries=("ap", "size"), map_at_5=("ap", "mean"), top1_accuracy=("top1", "mean"),
                                   new_individual_share=("new", "mean"))
    return table.reset_index()


def _new_individual_table(rows: IdentifyRows) -> pd.DataFrame:
    predicted = rows.predictions[:, 0] == rows.new_individual
    actual = rows.truth == rows.new_individual
    hits = int((predicted & actual).sum())
    return pd.DataFrame([{
        "predicted new (top 1)": int(predicted.sum()), "truly new": int(actual.sum()), "correct": hits,
        "precision": hits / predicted.sum() if predicted.any() else float("nan"),
        "recall": hits / actual.sum() if actual.any() else float("nan"),
        "new_individual in top 5": float((rows.predictions == rows.new_individual).any(axis=1).mean()),
    }])


def _threshold_text(params: dict) -> str:
    """Return the tuned new_individual rule in words (a threshold, a fraction, per-species thresholds)."""
    if "new_individual_fraction" in params:
        text = f"new_individual first for a tuned fraction {params['new_individual_fraction']:.4f} of the queries"
    else:
        text = f"new_individual inserted where the score drops below {params.get('threshold', float('nan')):.4f}"
    per_species = sum(key.startswith("species_threshold:") for key in params)
    if per_species:
        text += f" ({per_species} species with their own threshold)"
    return text + ". A query predicts new_individual when it is its first answer."


def _error_example(rows: IdentifyRows, lists: RetrievedLists, query: int, show) -> Example:
    answer, truth = rows.predictions[query, 0], rows.truth[query]
    retrieved = lists.rows[query]
    labels = np.where(retrieved >= 0, rows.individuals[np.clip(retrieved, 0, None)], None)
    if truth == rows.new_individual:
        kind = f"a new individual answered as {answer}"
    elif answer == rows.new_individual:
        kind = f"{truth} answered as new_individual"
    else:
        kind = f"{truth} answered as {answer}"
    found = np.nonzero(labels == truth)[0]
    truth_line = "truth: new individual" if truth == rows.new_individual else (
        f"truth {truth}: its nearest image is retrieved #{found[0] + 1}" if len(found)
        else f"truth {truth}: no image of it retrieved")
    shown = [show("query", query, (truth_line,))]
    answer_at = np.nonzero(labels == answer)[0] if answer != rows.new_individual else np.array([0])
    if len(answer_at) and retrieved[answer_at[0]] >= 0:
        at = int(answer_at[0])
        role = "answer" if answer != rows.new_individual else "nearest (rejected)"
        shown.append(show(role, int(retrieved[at]), (f"similarity {lists.similarities[query, at]:.4f}",)))
    if len(found):
        at = int(found[0])
        shown.append(show("truth", int(retrieved[at]), (f"similarity {lists.similarities[query, at]:.4f}",)))
    nearest = lists.similarities[query, 0]
    heading = f"{kind}" + (f" (nearest similarity {nearest:.4f})" if np.isfinite(nearest) else "")
    return Example(heading, tuple(shown))
