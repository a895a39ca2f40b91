"""Benchmark: exact self-search at gallery scale (float16 memory map), compkit vs faiss IndexFlatIP vs Dask.

    .venv/bin/python benchmarks/knn_scale.py                          # N = 100k, 300k, 1M, D = 256, k = 50
    .venv/bin/python benchmarks/knn_scale.py --sizes 25000,50000,100000 --project 1000000,1600000
    .venv/bin/python benchmarks/knn_scale.py --quick                  # 4,000 and 8,000 rows: a smoke run
    .venv/bin/python benchmarks/knn_scale.py --sizes 1000000 --queries 100000   # 100k queries, 1M index

For every N the embeddings are written once as a float16 .npy and each method runs in a fresh child process
on its memory map, so its wall time, CPU time and peak RSS are its own:

- compkit: ``get_backend("auto", memory=--memory)``, the blocked search (bf16 candidates + exact fp32 re-rank
  where bf16 is faster), reading the float16 map block by block;
- faiss: ``IndexFlatIP`` on a float32 copy (faiss searches float32 only), the named reference: every ratio
  printed is against it, measured in the same run;
- dask: ``DaskKNN`` on a LocalCluster of --workers single-threaded worker processes started in the child
  (the start-up and a small warm-up search, which imports torch in the workers, are timed apart); its peak
  RSS is the driver's plus the largest worker's. Its result is checked equal, bit for bit, to compkit's.

"Added" RSS is the peak minus the peak before the search (python, torch, imports). After the runs the time
is fitted to c * N^2 and the added RSS to a + b * N (least squares), and --project sizes are projected from
the fits, labelled as projections, next to one GPU at --gpu-tflops (a datasheet figure, not a measurement:
2 N^2 D flops at that rate is a lower bound on the time).

--queries Q searches only the first Q rows (the rows are i.i.d. draws, so any Q are a fair sample) against
the whole index of N: the cost of an exact search is linear in the queries, so a run that would take hours
at N = 1M can be measured on a tenth of its queries. Its rows say so, and the fits scale their time by N / Q
(an extrapolation, labelled as one); memory is measured on the full index either way.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from knn import _machine_busy_seconds, recall_at_k  # noqa: E402  the 70k benchmark's helpers

# NVIDIA H100 SXM / H200 datasheets: BF16 Tensor Core 1,979 TFLOPS "with sparsity", i.e. 989 dense.
H100_BF16_DENSE_TFLOPS = 989.0


def write_embeddings(path: Path, n_rows: int, dim: int, seed: int = 0) -> None:
    """Write n_rows unit float16 rows around n/10 centres (like benchmarks/knn.py's) to a .npy, in blocks."""
    rng = np.random.default_rng(seed)
    spectrum = (1.0 + np.arange(dim) / 32.0) ** -0.5
    centres = rng.standard_normal((max(1, n_rows // 10), dim)).astype(np.float32) * spectrum
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n_rows, dim))
    for start in range(0, n_rows, 100_000):
        stop = min(start + 100_000, n_rows)
        rows = centres[rng.integers(0, len(centres), stop - start)]
        rows = rows + 0.8 * rng.standard_normal((stop - start, dim)).astype(np.float32) * spectrum
        out[start:stop] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    out.flush()


def _run_compkit(embeddings, queries, k, options):
    from compkit.neighbors import get_backend

    search = get_backend("auto", memory=options["memory"])
    return search(queries, embeddings, k), repr(search), {}


def _run_faiss(embeddings, queries, k, options):
    import faiss

    rows = np.ascontiguousarray(embeddings, dtype=np.float32)  # faiss holds float32 codes
    index = faiss.IndexFlatIP(rows.shape[1])
    index.add(rows)
    searched = rows if len(queries) == len(rows) else np.ascontiguousarray(queries, dtype=np.float32)
    return index.search(searched, k), "faiss.IndexFlatIP (float32 copy)", {}


def _run_dask(embeddings, queries, k, options):
    from dask.distributed import Client, LocalCluster

    from compkit.neighbors.dask_knn import DaskKNN

    started = time.perf_counter()
    with LocalCluster(n_workers=options["workers"], threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        search = DaskKNN(client, memory=options["memory"])
        search(embeddings[:600], embeddings[:600], k)  # workers import torch and compkit before the clock
        startup = time.perf_counter() - started
        baseline = client.run(_peak_rss_mb)
        search_started = time.perf_counter()
        result = search(queries, embeddings, k)
        seconds = time.perf_counter() - search_started
        peaks = client.run(_peak_rss_mb)
    added = max(peaks[worker] - baseline[worker] for worker in peaks)
    extra = {"startup_s": round(startup, 1), "search_s": seconds, "worker_peak_mb": round(max(peaks.values())),
             "worker_added_mb": round(added)}
    return result, f"DaskKNN on LocalCluster({options['workers']} x 1 thread)", extra


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


METHODS = {"compkit": _run_compkit, "faiss": _run_faiss, "dask": _run_dask}


def _child(method: str, path: str, k: int, options: dict) -> dict:
    import torch  # noqa: F401  imported before the clock starts, as every method's library is

    embeddings = np.load(path, mmap_mode="r")
    queries = embeddings[: options["queries"]] if options["queries"] else embeddings
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    busy_started, started = _machine_busy_seconds(), time.perf_counter()
    cpu_started = _cpu_seconds()
    (similarities, indices), description, extra = METHODS[method](embeddings, queries, k, options)
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_started
    others = (_machine_busy_seconds() - busy_started - cpu) / seconds if busy_started is not None else None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if "search_s" in extra:  # the cluster: the driver's peak plus the largest worker's, its start-up untimed
        seconds = extra["search_s"]
        peak += extra["worker_peak_mb"]
        rss_before += extra["worker_peak_mb"] - extra["worker_added_mb"]
    return {"seconds": seconds, "cpu": cpu, "others": others, "peak_mb": peak, "before_mb": rss_before,
            "description": description, "extra": extra, "similarities": np.asarray(similarities, np.float32),
            "indices": np.asarray(indices, np.int64)}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def fit_quadratic(sizes, seconds) -> tuple[float, float]:
    """Return (c, exponent): the least-squares c of t = c N^2, and the log-log slope of t against N."""
    sizes, seconds = np.asarray(sizes, float), np.asarray(seconds, float)
    c = float((seconds * sizes**2).sum() / (sizes**4).sum())
    exponent = float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0]) if len(sizes) > 1 else float("nan")
    return c, exponent


def fit_linear(sizes, megabytes) -> tuple[float, float]:
    """Return (a, b) of the least-squares line MB = a + b N."""
    if len(sizes) < 2:
        return float(megabytes[0]), 0.0
    b, a = np.polyfit(np.asarray(sizes, float), np.asarray(megabytes, float), 1)
    return float(a), float(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,300000,1000000", help="comma-separated N (self-search)")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--memory", default="2GB", help="compkit's block budget ([neighbors] memory)")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes for dask")
    parser.add_argument("--methods", default="compkit,faiss,dask")
    parser.add_argument("--project", default="1000000,1600000", help="sizes projected from the fits")
    parser.add_argument("--gpu-tflops", type=float, default=H100_BF16_DENSE_TFLOPS,
                        help="bf16 dense TFLOPS of one GPU for the projection (default: H100/H200 datasheet)")
    parser.add_argument("--quick", action="store_true", help="smoke run: N = 4,000 and 8,000")
    parser.add_argument("--queries", type=int, default=0,
                        help="search only the first Q rows against the whole index (default: all N)")
    parser.add_argument("--dir", default=None, help="where the float16 .npy files go (default: a temp dir)")
    args = parser.parse_args()
    sizes = [4000, 8000] if args.quick else [int(value) for value in args.sizes.split(",")]
    methods = [name.strip() for name in args.methods.split(",")]
    if "faiss" in methods and importlib.util.find_spec("faiss") is None:
        parser.error("faiss is not installed (pip install 'compkit[faiss]'): it is this benchmark's reference")
    if args.queries < 0 or any(args.queries > n for n in sizes):
        parser.error(f"--queries {args.queries} must be between 0 (all rows) and the smallest of --sizes")
    options = {"memory": args.memory, "workers": args.workers, "queries": args.queries}
    context = multiprocessing.get_context("spawn")
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        for n_rows in sizes:
            path = Path(folder) / f"embeddings-{n_rows}.npy"
            write_embeddings(path, n_rows, args.dim)
            results = {}
            for method in methods:
                with ProcessPoolExecutor(1, mp_context=context) as pool:
                    results[method] = pool.submit(_child, method, str(path), args.k, options).result()
                result = results[method]
                print(f"N={n_rows:>9,} Q={args.queries or n_rows:>9,} {method:<8} {result['seconds']:8.1f} s  "
                      f"cpu {result['cpu']:8.1f} s  "
                      f"peak RSS {result['peak_mb']:7.0f} MB (before search {result['before_mb']:.0f})  "
                      f"others busy {result['others'] or 0:.1f} cores  {result['description']} {result['extra']}",
                      flush=True)
            path.unlink()
            reference = results.get("faiss")
            for method, result in results.items():
                row = {"n": n_rows, "queries": args.queries or n_rows, "method": method, **{key: result[key] for key in
                                                       ("seconds", "cpu", "peak_mb", "before_mb", "others")}}
                row["added_mb"] = result["peak_mb"] - result["before_mb"]
                if reference is not None:
                    row["ratio"] = result["seconds"] / reference["seconds"]
                    row["recall"] = recall_at_k(result["indices"], reference["indices"])
                if method == "dask" and "compkit" in results:
                    row["equal_compkit"] = bool(np.array_equal(result["indices"], results["compkit"]["indices"])
                                                and np.array_equal(result["similarities"],
                                                                   results["compkit"]["similarities"]))
                rows.append(row)
    print_table(rows, args)


def print_table(rows, args) -> None:
    print(f"\nexact self-search, D = {args.dim}, k = {args.k}, float16 storage, memory = {args.memory}, "
          f"{os.cpu_count()} cores; ratio = time / faiss IndexFlatIP's in the same run")
    print("| N | queries | method | time s | cpu s | peak RSS MB | added MB | x faiss | recall@k vs faiss | note |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        note = f"equal to compkit: {row['equal_compkit']}" if "equal_compkit" in row else ""
        print(f"| {row['n']:,} | {row['queries']:,} | {row['method']} | {row['seconds']:.1f} | {row['cpu']:.1f} | "
              f"{row['peak_mb']:.0f} | "
              f"{row['added_mb']:.0f} | {row.get('ratio', float('nan')):.2f} | {row.get('recall', float('nan')):.5f} "
              f"| {note} |")
    projected = [int(value) for value in args.project.split(",") if value]
    print("\nfits and projections (projections, not measurements): time is fitted in CPU seconds for the")
    print("single-process methods (steadier than wall time where other jobs share the cores), in wall seconds")
    print("for dask (its workers' CPU is not counted); the N^2 law is also extrapolated from the largest N alone;")
    print("a run on Q of N queries counts as its time x N / Q (an extrapolation: exact search is linear in queries)")
    for method in dict.fromkeys(row["method"] for row in rows):
        mine = [row for row in rows if row["method"] == method]
        sizes = [row["n"] for row in mine]
        key = "seconds" if method == "dask" else "cpu"
        full = [row[key] * row["n"] / row["queries"] for row in mine]
        c, exponent = fit_quadratic(sizes, full)
        largest = max(range(len(mine)), key=lambda i: sizes[i])
        c_largest = full[largest] / sizes[largest] ** 2
        a, b = fit_linear(sizes, [row["peak_mb"] for row in mine])
        cells = ", ".join(f"N={n:,}: {c * n * n / 3600:.2f} h (from the largest N: {c_largest * n * n / 3600:.2f} h), "
                          f"peak RSS {a + b * n:.0f} MB" for n in projected)
        print(f"- {method}: {key} = {c:.3e} N^2 s (log-log slope {exponent:.2f}); peak RSS = {a:.0f} MB + "
              f"{b * 1e6:.0f} MB per million rows; projected {cells}")
    for n in projected:
        flops = 2.0 * n * n * args.dim
        print(f"- one GPU at {args.gpu_tflops:.0f} bf16 TFLOPS (datasheet, not measured): N={n:,} needs "
              f"{flops:.2e} flops, >= {flops / (args.gpu_tflops * 1e12):.2f} s")


if __name__ == "__main__":
    main()
