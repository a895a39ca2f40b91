"""Per-trial cost of the opt-in match options at Shopee's size (34,250 rows, k = 50), against the plain rule.

The reference is the plain threshold + min2 objective (`PrefixMatchF1`, what every match study runs), called
in the same process on the same neighbour lists. Measured: the mutual-neighbour filter (`mutual_top`, r in
[1, 10]), group-size calibration (`group_size_weight`) and both, as a study calls them (median over trials
of random parameters, after each r's one-off precompute, which is timed apart), and the same options applied
once to the lists as `compkit predict` does (filter, mask, calibrate) against `match_mask` alone. Then
agglomerative merging (`agglomerate`: a trial cuts the hierarchy built once a study) and alpha-QE / DBA (a
(k, alpha) costs new self-searches of every row, timed against the plain search, hence chosen on a grid
before the study, not by it).

    .venv/bin/python benchmarks/postprocess_cost.py [--rows 34250] [--depth 50] [--trials 200] [--dim 256]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from compkit.metrics import label_sizes
from compkit.postprocess.group_sizes import calibrated_keep
from compkit.postprocess.matches import match_mask
from compkit.postprocess.mutual import mutual_filter, mutual_ranks
from compkit.retrieval.single import OOFNeighbors
from compkit.tuning.objectives import OptionsMatchF1, PrefixMatchF1


def shopee_like_lists(n_rows: int, depth: int, seed: int = 0) -> OOFNeighbors:
    """Return sorted self-search lists: each row, its group mates (similar) then random rows (less so)."""
    rng = np.random.default_rng(seed)
    sizes = np.clip(rng.geometric(0.35, size=n_rows) + 1, 2, 51)  # Shopee: groups of 2 to 51, mostly 2-4
    labels = np.repeat(np.arange(n_rows), sizes)[:n_rows]
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], labels)
    mates = order[np.clip(starts[:, None] + np.arange(depth)[None, :], 0, n_rows - 1)]
    is_mate = labels[mates] == labels[:, None]
    randoms = rng.integers(0, n_rows, size=(n_rows, depth))
    indices = np.where(is_mate, mates, randoms)
    similarities = np.where(is_mate, rng.uniform(0.45, 1.0, (n_rows, depth)), rng.uniform(0.0, 0.75, (n_rows, depth)))
    indices[:, 0], similarities[:, 0] = np.arange(n_rows), 1.0  # itself first, as a self-search returns
    column = np.argsort(-similarities, axis=1, kind="stable")
    similarities = np.take_along_axis(similarities, column, axis=1).astype(np.float32)
    indices = np.take_along_axis(indices, column, axis=1)
    repeated = np.zeros_like(indices, dtype=bool)  # a row lists a posting once: later repeats become padding
    sorted_columns = np.argsort(indices, axis=1, kind="stable")
    sorted_indices = np.take_along_axis(indices, sorted_columns, axis=1)
    repeat_sorted = np.zeros_like(repeated)
    repeat_sorted[:, 1:] = sorted_indices[:, 1:] == sorted_indices[:, :-1]
    np.put_along_axis(repeated, sorted_columns, repeat_sorted, axis=1)
    indices[repeated], similarities[repeated] = -1, -np.inf
    return OOFNeighbors(np.arange(n_rows).astype(str), labels, np.zeros(n_rows, dtype=np.int64), similarities,
                        indices, "all")


def median_call_us(objective, params_list) -> float:
    times = []
    for params in params_list:
        start = time.perf_counter()
        objective(params)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=34_250)
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--dim", type=int, default=256, help="embedding width of the QE / DBA searches")
    args = parser.parse_args()
    neighbors = shopee_like_lists(args.rows, args.depth)
    rng = np.random.default_rng(1)
    thresholds = rng.uniform(0.3, 0.95, args.trials)
    plain = [{"threshold": float(t), "min2_threshold": float(t) * 0.7} for t in thresholds]
    tops = rng.integers(1, 11, args.trials)
    mutual = [{**p, "mutual_top": int(r)} for p, r in zip(plain, tops, strict=True)]
    weights = rng.uniform(0, 1, args.trials)
    calibrated = [{**p, "group_size_weight": float(w)} for p, w in zip(plain, weights, strict=True)]
    both = [{**p, "group_size_weight": float(w)} for p, w in zip(mutual, weights, strict=True)]

    start = time.perf_counter()
    reference = PrefixMatchF1(neighbors, max_matches=50)
    reference_setup = time.perf_counter() - start
    start = time.perf_counter()
    ranks = mutual_ranks(neighbors.indices)
    ranks_s = time.perf_counter() - start
    with_mutual = OptionsMatchF1(neighbors, max_matches=50, mutual=True)
    start = time.perf_counter()
    for top in range(1, 11):  # each r's filtered lists and sums, once a study
        with_mutual({"threshold": 0.5, "mutual_top": top})
    per_top_s = (time.perf_counter() - start) / 10
    calibrating = OptionsMatchF1(neighbors, max_matches=50, mutual=False)

    reference_us = median_call_us(reference, plain)
    rows = [("plain threshold + min2 (reference, PrefixMatchF1)", reference_us),
            ("mutual filter, r in [1, 10]", median_call_us(with_mutual, mutual)),
            ("group-size calibration", median_call_us(calibrating, calibrated)),
            ("mutual filter + calibration", median_call_us(with_mutual, both))]
    print(f"N = {args.rows:,}, k = {args.depth}, {args.trials} trials of random parameters; median per call")
    for name, micros in rows:
        print(f"  {name:52s} {micros:10.1f} us   {micros / reference_us:8.1f}x the reference")
    print(f"  once a study: reference sums {reference_setup:.2f} s; mutual ranks {ranks_s:.2f} s, then "
          f"{per_top_s:.2f} s for each r first used")

    # applied once, as `compkit predict` does on the test lists
    similarities, indices = neighbors.similarities, neighbors.indices
    sizes = label_sizes(neighbors.labels)
    start = time.perf_counter()
    match_mask(similarities, indices, 0.6, min2_threshold=0.4)
    mask_s = time.perf_counter() - start
    start = time.perf_counter()
    filtered = mutual_filter(similarities, indices, 4, ranks=ranks)
    keep = match_mask(*filtered, 0.6, min2_threshold=0.4)
    calibrated_keep(*filtered, keep, sizes, 0.5)
    options_s = time.perf_counter() - start + ranks_s
    print(f"  predict: match_mask {mask_s * 1e3:.0f} ms; mutual filter + mask + calibration {options_s * 1e3:.0f} ms "
          f"({options_s / mask_s:.1f}x)")
    agglomeration_cost(neighbors, reference_us, args.trials)
    expansion_cost(neighbors.labels, reference_us, args.dim)



def agglomeration_cost(neighbors: OOFNeighbors, reference_us: float, trials: int) -> None:
    """Print the agglomeration's per-trial cost (a cut, the attachment, the F1 counts) against the reference,
    and its hierarchy's one-off build (once a study, once per `compkit predict`)."""
    from compkit.postprocess.clusters import ClusterMatches

    start = time.perf_counter()
    clusters = ClusterMatches(neighbors.similarities, neighbors.indices, max_size=50)
    build_s = time.perf_counter() - start
    rng = np.random.default_rng(2)
    params = [{"cluster_size": float(size), "attach_threshold": float(attach)}
              for size, attach in zip(rng.uniform(1, 10, trials), rng.uniform(0, 1, trials), strict=True)]
    micros = median_call_us(lambda p: clusters.row_f1(p, neighbors.labels).mean(), params)
    print(f"  {'agglomeration to a mean size, singletons attached':52s} {micros:10.1f} us   "
          f"{micros / reference_us:8.1f}x the reference")
    print(f"  once a study (and once a predict): the merge hierarchy, {build_s:.2f} s "
          f"({len(clusters.hierarchy.left):,} merges)")


def expansion_cost(labels: np.ndarray, reference_us: float, dim: int) -> None:
    """Print what one (k, alpha) of alpha-QE / DBA costs: a new self-search of every row (the plain search is the
    floor), against the reference trial; hence a grid before the study, not a study parameter."""
    from compkit.config import PostprocessSpace
    from compkit.retrieval.expansion import search_expanded
    from compkit.retrieval.search import search

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(labels.max() + 1, dim)).astype(np.float32)
    embeddings = centres[labels] + rng.normal(scale=1.0, size=(len(labels), dim)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    search(embeddings[:512], embeddings[:512], 50, backend="auto")  # warm-up: the first search pays for set-up
    timings = {}
    for name, space in (("plain self-search (no expansion)", PostprocessSpace()),
                        ("alpha-QE k=2 (one search more)", PostprocessSpace(qe_k=2)),
                        ("alpha-DBA k=2 + alpha-QE k=2 (two more)", PostprocessSpace(qe_k=2, dba_k=2))):
        runs = []
        for _ in range(2):  # the faster of two runs: the machine may be shared
            start = time.perf_counter()
            if name.startswith("plain"):
                search(embeddings, embeddings, 50, backend="auto")
            else:
                search_expanded(embeddings, 50, space=space, backend="auto")
            runs.append(time.perf_counter() - start)
        timings[name] = min(runs)
    print(f"  QE / DBA at D = {dim} (float32, backend auto): each (k, alpha) needs its own searches")
    for name, seconds in timings.items():
        print(f"  {name:52s} {seconds:8.2f} s    {seconds * 1e6 / reference_us:12,.0f}x the reference")


if __name__ == "__main__":
    main()
