"""Benchmark one Optuna trial of compkit's match objective at Shopee's size, against the notebooks' way.

N = 34,250 postings, k = 50 sorted neighbours each (self first). compkit's objective is
`compkit.tuning.match_evaluator` (threshold + min2, vectorised over all rows) run inside a real Optuna study;
the reference is what public notebooks do for one threshold: a list of posting ids per row and a pandas
`apply` of a set-based F1. Both score the same predictions, so their values must agree.

Run: .venv/bin/python benchmarks/tuning_trial.py
"""

from __future__ import annotations

import time

import numpy as np
import optuna
import pandas as pd
from metrics import K_CANDIDATES, knn_candidates, shopee_like_labels

from compkit.postprocess.matches import match_mask
from compkit.retrieval.single import OOFNeighbors
from compkit.tuning.objectives import match_evaluator

TRIALS = 200


def sorted_neighbours(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return kNN-like (similarities, indices): unique per row, self first at 1.0, sorted descending.

    Repeated candidates (random distractors can repeat) are padded out as index -1, as backends pad rows.
    """
    candidates, similarities = knn_candidates(labels, rng)
    is_self = candidates == np.arange(len(labels))[:, None]
    similarities = np.where(is_self, 1.0, np.minimum(similarities, 0.999))
    order = np.argsort(candidates, axis=1, kind="stable")
    sorted_candidates = np.take_along_axis(candidates, order, 1)
    repeated = np.zeros_like(sorted_candidates, dtype=bool)
    repeated[:, 1:] = sorted_candidates[:, 1:] == sorted_candidates[:, :-1]
    duplicate = np.empty_like(repeated)
    np.put_along_axis(duplicate, order, repeated, axis=1)
    candidates, similarities = np.where(duplicate, -1, candidates), np.where(duplicate, -np.inf, similarities)
    order = np.argsort(-similarities, axis=1, kind="stable")
    return np.take_along_axis(similarities, order, 1).astype(np.float32), np.take_along_axis(candidates, order, 1)


def notebook_f1(labels, similarities, indices, threshold: float) -> float:
    posting = np.array([f"p{i}" for i in range(len(labels))], dtype=object)
    keep = match_mask(similarities, indices, threshold, max_matches=K_CANDIDATES)
    frame = pd.DataFrame({"label": labels, "posting_id": posting})
    frame["target"] = frame["label"].map(frame.groupby("label")["posting_id"].agg(list))
    frame["pred"] = [list(posting[row[mask]]) for row, mask in zip(indices, keep, strict=True)]

    def f1(row) -> float:
        truth, predicted = set(row.target), set(row.pred)
        return 2 * len(truth & predicted) / (len(truth) + len(predicted))

    return float(frame.apply(f1, axis=1).mean())


def main() -> None:
    rng = np.random.default_rng(0)
    labels = shopee_like_labels(rng)
    similarities, indices = sorted_neighbours(labels, rng)
    neighbors = OOFNeighbors(np.arange(len(labels)).astype(str), labels, np.zeros(len(labels), dtype=np.int64),
                             similarities, indices, "all")
    start = time.perf_counter()
    evaluate = match_evaluator(neighbors, max_matches=K_CANDIDATES)
    setup_seconds = time.perf_counter() - start

    start = time.perf_counter()
    reference = notebook_f1(labels, similarities, indices, 0.55)
    reference_seconds = time.perf_counter() - start
    compkit_value = evaluate({"threshold": 0.55})

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    objective_seconds: list[float] = []

    def objective(trial) -> float:
        params = {"threshold": trial.suggest_float("threshold", 0.2, 0.95)}
        params["min2_threshold"] = trial.suggest_float("min2_threshold", 0.0, params["threshold"])
        begin = time.perf_counter()
        value = evaluate(params)
        objective_seconds.append(time.perf_counter() - begin)
        return value

    start = time.perf_counter()
    study.optimize(objective, n_trials=TRIALS)
    trial_seconds = (time.perf_counter() - start) / TRIALS
    objective_median = float(np.median(objective_seconds))

    print(f"N={len(labels):,} k={K_CANDIDATES}, threshold 0.55")
    print(f"  reference: pandas apply of a set-based F1     {reference_seconds * 1e3:9.1f} ms  F1={reference:.12f}")
    print(f"  compkit:   match_evaluator (vectorised)       {objective_median * 1e3:9.4f} ms  F1={compkit_value:.12f}"
          f"  (once per study: {setup_seconds * 1e3:.0f} ms to precompute)")
    print(f"  ratio reference / compkit: {reference_seconds / objective_median:,.0f}x (target >= 300x); "
          f"|difference| = {abs(reference - compkit_value):.1e} (target <= 1e-9)")
    print(f"  one Optuna trial (TPE sampling + objective), mean of {TRIALS}: {trial_seconds * 1e3:.2f} ms "
          "(target < 10 ms)")


if __name__ == "__main__":
    main()
