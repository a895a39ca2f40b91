"""Benchmark `compkit ensemble` on six match CSVs of 70,000 rows against the notebooks' pandas way, one process.

Data: 70,000 postings in label groups of 2 to 50 (long-tailed, like Shopee's); six models, each finding
every true partner with its own recall (0.65-0.9) and adding its own number of false matches (Poisson,
0.5-3 per row), at most 50 ids per row, written as submission CSVs.
compkit: read + validate the six files, weighted vote, write the ensemble CSV (`compkit.ensemble.ensemble`
and `write_csv`, what the command runs). Reference: the public notebooks' way: `pd.read_csv` each file,
`str.split` the lists, merge on posting_id, then a per-row `apply` counting votes with a Counter, and
`to_csv`. Both outputs are checked equal (as sets per row). Also timed: scoring one weight vector with
the tuning objective (`VoteF1`), what an Optuna trial or a greedy step costs.

Run: .venv/bin/python benchmarks/ensemble.py
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from compkit.config import parse_config
from compkit.ensemble.ballots import MatchVotes
from compkit.ensemble.objective import VoteF1
from compkit.ensemble.vote import ensemble, load_inputs
from compkit.submission import format_match_rows
from compkit.workspace import write_csv

N_POSTINGS = 70_000
MAX_GROUP = 50
MAX_MATCHES = 50
RECALLS = (0.9, 0.85, 0.8, 0.75, 0.7, 0.65)
FALSE_MATCHES = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
WEIGHTS = (1.0, 1.0, 0.8, 0.8, 0.6, 0.6)
VOTE_THRESHOLD = 0.4
TARGET_S = 5.0
CONFIG = parse_config("""
slug = "bench"
task = "match"
source = "local"
[columns]
id = "posting_id"
label = "label_group"
[submission]
id_column = "posting_id"
prediction_column = "matches"
max_predictions = 50
""", source="benchmarks/ensemble.py")


def long_tailed_groups(rng: np.random.Generator) -> np.ndarray:
    """Return a label per posting: groups of 2 to MAX_GROUP postings, most of them small."""
    sizes = np.minimum(2 + rng.zipf(1.8, size=N_POSTINGS // 2) - 1, MAX_GROUP)
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), N_POSTINGS) + 1]
    sizes[-1] -= sizes.sum() - N_POSTINGS
    if sizes[-1] == 1:  # no group of one: give that posting to the smallest group
        sizes = sizes[:-1]
        sizes[np.argmin(sizes)] += 1
    return rng.permutation(np.repeat(np.arange(len(sizes)), sizes))


def model_rows(labels: np.ndarray, rng: np.random.Generator, *, recall: float, false_matches: float):
    """Return one model's CSR rows: itself, each true partner with probability `recall`, random false ones."""
    order = np.argsort(labels, kind="stable")
    sizes = np.bincount(labels)
    starts = (np.cumsum(sizes) - sizes)[labels]
    rows = np.repeat(np.arange(len(labels)), sizes[labels])
    partners = order[np.repeat(starts, sizes[labels]) + _ranks(sizes[labels])]
    found = (partners == rows) | (rng.random(len(rows)) < recall)
    n_false = rng.poisson(false_matches, size=len(labels))
    false_rows = np.repeat(np.arange(len(labels)), n_false)
    rows = np.concatenate([rows[found], false_rows])
    columns = np.concatenate([partners[found], rng.integers(0, len(labels), size=len(false_rows))])
    keys = np.unique(rows * len(labels) + columns)
    rows, columns = np.divmod(keys, len(labels))
    keep = _ranks(np.bincount(rows, minlength=len(labels))) < MAX_MATCHES
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows[keep], minlength=len(labels)))])
    return indptr, columns[keep]


def _ranks(lengths: np.ndarray) -> np.ndarray:
    """Return 0..length-1 for each run of `lengths`, concatenated."""
    return np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def reference(paths: list[Path], output: Path) -> None:
    """The notebooks' way: merge the files on posting_id, then count votes row by row in an `apply`."""
    merged = None
    for k, path in enumerate(paths):
        frame = pd.read_csv(path)
        frame[f"m{k}"] = frame["matches"].fillna("").str.split()
        frame = frame[["posting_id", f"m{k}"]]
        merged = frame if merged is None else merged.merge(frame, on="posting_id")
    needed = VOTE_THRESHOLD * sum(WEIGHTS) - 1e-12

    def vote(row) -> str:
        votes = Counter()
        for k, weight in enumerate(WEIGHTS):
            for posting in set(row[f"m{k}"]):
                votes[posting] += weight
        kept = {posting for posting, total in votes.items() if total >= needed} | {row["posting_id"]}
        return " ".join(sorted(kept))

    merged["matches"] = merged.apply(vote, axis=1)
    merged[["posting_id", "matches"]].to_csv(output, index=False)


def as_sets(path: Path) -> pd.Series:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False).set_index("posting_id")["matches"]
    return frame.str.split().map(frozenset).sort_index()


def main() -> None:
    rng = np.random.default_rng(0)
    labels = long_tailed_groups(rng)
    ids = np.array([f"test_{i}" for i in range(N_POSTINGS)], dtype=object)
    sizes = np.bincount(labels)
    print(f"{N_POSTINGS:,} postings, {len(sizes):,} groups of {sizes.min()}-{sizes.max()} "
          f"(mean {sizes.mean():.2f}), six models")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        paths = []
        for k, (recall, false_matches) in enumerate(zip(RECALLS, FALSE_MATCHES, strict=True)):
            indptr, indices = model_rows(labels, rng, recall=recall, false_matches=false_matches)
            frame = format_match_rows(ids, indptr, indices, config=CONFIG).sample(frac=1, random_state=k)
            paths.append(folder / f"model{k}.csv")
            frame.to_csv(paths[-1], index=False)
        ids_listed = sum(len(s.indices) for s in load_inputs(CONFIG, paths, expected_ids=ids))
        print(f"{ids_listed:,} ids listed over the six files, {sum(p.stat().st_size for p in paths) / 1e6:.0f} MB")

        start = time.perf_counter()
        result = ensemble(CONFIG, paths, expected_ids=ids, weights=list(WEIGHTS), vote_threshold=VOTE_THRESHOLD)
        write_csv(folder / "compkit.csv", result.frame)
        compkit_s = time.perf_counter() - start

        start = time.perf_counter()
        reference(paths, folder / "reference.csv")
        reference_s = time.perf_counter() - start
        equal = as_sets(folder / "compkit.csv").equals(as_sets(folder / "reference.csv"))

        objective = VoteF1(MatchVotes.from_submissions(load_inputs(CONFIG, paths, expected_ids=ids)), labels)
        weights = np.array(WEIGHTS)
        trial_s = min(_timed(lambda: objective.score(weights, VOTE_THRESHOLD)) for _ in range(20))
        greedy_s = min(_timed(lambda: objective.best(weights)) for _ in range(5))

    print(f"reference (pandas merge + per-row Counter apply): {reference_s:.2f} s")
    print(f"compkit ensemble (read + validate + vote + write): {compkit_s:.2f} s "
          f"[target < {TARGET_S:.0f} s: {'met' if compkit_s < TARGET_S else 'MISSED'}]")
    print(f"ratio: {reference_s / compkit_s:.1f}x faster, outputs equal: {equal}")
    print(f"tuning objective, one weight vector: {trial_s * 1e3:.1f} ms; "
          f"every vote threshold of one weight vector (a greedy step): {greedy_s * 1e3:.1f} ms")


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
