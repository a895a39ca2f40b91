"""Benchmark compkit's vectorised metrics against the public notebooks' per-row Python, in one process.

(a) Row-wise F1 at Shopee's size (N = 34,250 postings, 11,014 label groups, k = 50 kNN candidates per row):
    compkit's `mean_row_f1` on CSR arrays vs a pandas `apply` of a set-based F1 over lists of posting ids.
    Two prediction sets: the candidates above a similarity threshold (what a tuning trial scores) and all 50.
(b) MAP@5 at Happywhale's test size (N = 28,000): `map_at_5` vs the per-image `list.index` reference.

Run: .venv/bin/python benchmarks/metrics.py
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from compkit.metrics import PAD_ID, dedupe_rows, encode_ids, map_at_5, row_f1

N_POSTINGS = 34_250
N_GROUPS = 11_014
K_CANDIDATES = 50
N_IMAGES = 28_000
N_INDIVIDUALS = 15_587


def best_time(function, *, repeats: int) -> float:
    """Return the best wall time of `repeats` calls, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def shopee_like_labels(rng: np.random.Generator) -> np.ndarray:
    """Return N_POSTINGS label codes in N_GROUPS groups of 2 to 50 postings (long-tailed, like Shopee's)."""
    sizes = np.full(N_GROUPS, 2)
    extra = N_POSTINGS - sizes.sum()
    weights = 1.0 / np.arange(1, 49) ** 1.5
    while extra > 0:
        grow = rng.choice(N_GROUPS, size=extra)
        sizes += np.bincount(grow, minlength=N_GROUPS) * (rng.random(N_GROUPS) < weights[np.minimum(sizes, 47)])
        sizes = np.minimum(sizes, 50)
        extra = N_POSTINGS - sizes.sum()
    return rng.permutation(np.repeat(np.arange(N_GROUPS), sizes))


def knn_candidates(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return (candidates, similarities), both (N, K): each row's group members first, then random postings."""
    order = np.argsort(labels, kind="stable")
    sizes = np.bincount(labels)
    starts = np.cumsum(sizes) - sizes
    rank = np.arange(K_CANDIDATES)
    own_group = rank < sizes[labels][:, None]
    member = order[np.minimum(starts[labels][:, None] + rank, len(labels) - 1)]
    candidates = np.where(own_group, member, rng.integers(0, len(labels), (len(labels), K_CANDIDATES)))
    same = labels[candidates] == labels[:, None]
    similarities = np.where(same, 0.7, 0.35) + rng.normal(0, 0.12, candidates.shape)
    return candidates, similarities


def as_rows(mask: np.ndarray, candidates: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return the kept candidates as CSR rows, each listed once and in no particular order (like kNN output)."""
    indptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))])
    indptr, indices = dedupe_rows(indptr, candidates[mask], n_columns=len(candidates))
    row_of = np.repeat(np.arange(len(candidates)), np.diff(indptr))
    return indptr, indices[np.lexsort((rng.random(len(indices)), row_of))]


def reference_f1_frame(labels: np.ndarray, indptr: np.ndarray, indices: np.ndarray) -> pd.DataFrame:
    """The public notebooks' frame: posting ids, the list of the group's ids, the list of predicted ids."""
    ids = np.array([f"train_{i}" for i in range(len(labels))], dtype=object)
    frame = pd.DataFrame({"posting_id": ids, "label_group": labels})
    frame["target"] = frame["label_group"].map(frame.groupby("label_group")["posting_id"].agg(list))
    frame["pred"] = [list(ids[indices[indptr[i] : indptr[i + 1]]]) for i in range(len(labels))]
    return frame


def f1(target: set, predicted: set) -> float:
    return 2 * len(target & predicted) / (len(target) + len(predicted))


def benchmark_row_f1(labels: np.ndarray, indptr: np.ndarray, indices: np.ndarray, title: str) -> None:
    frame = reference_f1_frame(labels, indptr, indices)
    reference_scores = frame.apply(lambda r: f1(set(r.target), set(r.pred)), axis=1).to_numpy()
    reference = best_time(lambda: frame.apply(lambda r: f1(set(r.target), set(r.pred)), axis=1), repeats=2)
    per_row = len(indices) / len(labels)
    print(f"(a) row F1, {title}: N={len(labels):,}, {len(indices):,} predictions ({per_row:.1f}/row)")
    print(f"    reference (pandas apply, set-based F1): {reference * 1e3:9.1f} ms")
    for assume_unique in (False, True):
        scores = row_f1(labels, indptr, indices, assume_unique=assume_unique)
        elapsed = best_time(lambda a=assume_unique: row_f1(labels, indptr, indices, assume_unique=a), repeats=30)
        difference = np.abs(scores - reference_scores).max()
        name = "assume_unique=True " if assume_unique else "default (dedupe)   "
        print(
            f"    compkit row_f1 {name}:     {elapsed * 1e3:9.2f} ms   ratio {reference / elapsed:7.0f}x"
            f"   max |diff| {difference:.1e}"
        )


def map_per_image(label: str, predictions: list[str]) -> float:
    """The Happywhale public notebooks' MAP@5 of one image."""
    try:
        return 1 / (predictions[:5].index(label) + 1)
    except ValueError:
        return 0.0


def benchmark_map_at_5(rng: np.random.Generator) -> None:
    individuals = np.array([f"{i:012x}" for i in rng.integers(0, 2**48, N_INDIVIDUALS)] + ["new_individual"])
    truth_codes = rng.integers(0, len(individuals), N_IMAGES)
    prediction_codes = rng.integers(0, len(individuals), (N_IMAGES, 5))
    hit_rank = rng.integers(0, 8, N_IMAGES)  # ranks 5..7 mean "absent from the top 5"
    rows = np.flatnonzero(hit_rank < 5)
    prediction_codes[rows, hit_rank[rows]] = truth_codes[rows]
    short = rng.random(N_IMAGES) < 0.1
    prediction_codes[short, 3:] = -1
    truth = individuals[truth_codes].astype(object)
    predictions = np.where(prediction_codes >= 0, individuals[prediction_codes], PAD_ID).astype(object)
    truth_list = truth.tolist()
    prediction_lists = [[p for p in row if p != PAD_ID] for row in predictions.tolist()]

    def reference_map() -> float:
        return float(np.mean([map_per_image(t, p) for t, p in zip(truth_list, prediction_lists, strict=True)]))

    reference_value = reference_map()
    reference = best_time(reference_map, repeats=5)
    print(f"(b) MAP@5: N={N_IMAGES:,} images, {N_INDIVIDUALS:,} individuals + new_individual")
    print(f"    reference (per-image list.index):      {reference * 1e3:9.2f} ms   MAP@5 {reference_value:.6f}")
    encoding = best_time(lambda: encode_ids(truth, predictions), repeats=5)
    for name, args in (
        ("string ids (object)", (truth, predictions)),
        ("integer codes      ", encode_ids(truth, predictions)),
    ):
        value = map_at_5(*args)
        elapsed = best_time(lambda a=args: map_at_5(*a), repeats=30)
        print(
            f"    compkit map_at_5, {name}: {elapsed * 1e3:7.2f} ms   ratio {reference / elapsed:7.0f}x"
            f"   |diff| {abs(value - reference_value):.1e}"
        )
    print(f"    (encode_ids, string ids to codes, once: {encoding * 1e3:.1f} ms)")


def main() -> None:
    rng = np.random.default_rng(0)
    labels = shopee_like_labels(rng)
    candidates, similarities = knn_candidates(labels, rng)
    above_threshold = as_rows(similarities > 0.55, candidates, rng)
    benchmark_row_f1(labels, *above_threshold, "k=50 candidates above a threshold of 0.55")
    benchmark_row_f1(labels, *as_rows(np.ones_like(similarities, dtype=bool), candidates, rng), "all k=50 kept")
    benchmark_map_at_5(rng)


if __name__ == "__main__":
    main()
