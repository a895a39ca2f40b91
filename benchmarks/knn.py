"""Benchmark: exact cosine top-k of a set of embeddings against itself, compkit vs faiss vs scikit-learn.

    .venv/bin/python benchmarks/knn.py            # 70,000 x 512, k=50 (several minutes: sklearn is slow)
    .venv/bin/python benchmarks/knn.py --quick    # 5,000 x 512 smoke run
    .venv/bin/python benchmarks/knn.py --methods auto,faiss --repeat 3

Each method runs in a fresh child process so that its time and peak RSS are its own; with --repeat the
methods take turns and each one's fastest run is kept. CPU seconds (user + system of that process) are
printed beside wall time: where other work shares the cores, they are the steadier comparison, and "others"
says how many cores other processes kept busy on average during the run (from /proc/stat). Peak RSS is
the child's whole peak (python, torch, the embeddings); "before search" is that peak just before the
search starts, so the difference is what the search itself added. Recall@k is measured against faiss's
IndexFlatIP (or against compkit's fp32 search where faiss is not run); the similarity error is the largest
|returned similarity - float64 dot product of the returned pair|.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


def clustered_embeddings(n_rows: int, dim: int, seed: int = 0) -> np.ndarray:
    """Return unit rows around n/10 group centres with an anisotropic spectrum, like real embeddings."""
    rng = np.random.default_rng(seed)
    spectrum = (1.0 + np.arange(dim) / 32.0) ** -0.5
    centres = rng.standard_normal((max(1, n_rows // 10), dim)).astype(np.float32) * spectrum
    members = rng.integers(0, len(centres), n_rows)
    rows = centres[members] + 0.8 * rng.standard_normal((n_rows, dim)).astype(np.float32) * spectrum
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _search_compkit_auto(embeddings, k):
    from compkit.neighbors import get_backend

    search = get_backend("auto")  # inside the timing: auto's one-off calibration is part of the cost
    result = search(embeddings, embeddings, k)
    description = repr(search)
    if hasattr(search, "resolve_precision"):
        description += f" ran in {search.resolve_precision(len(embeddings), len(embeddings), embeddings.shape[1])}"
    return result, description


def _search_compkit_fp32(embeddings, k):
    from compkit.neighbors import TorchKNN

    search = TorchKNN(precision="fp32")
    return search(embeddings, embeddings, k), repr(search)


def _search_faiss(embeddings, k):
    import faiss

    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(embeddings)
    return index.search(embeddings, k), "faiss.IndexFlatIP"


def _search_sklearn(embeddings, k):
    from sklearn.neighbors import NearestNeighbors

    model = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(embeddings)
    distances, indices = model.kneighbors(embeddings)
    return (1.0 - distances, indices), "sklearn NearestNeighbors(brute, cosine)"


METHODS = {  # --methods key: (printed name, search)
    "auto": ("compkit auto", _search_compkit_auto),
    "fp32": ("compkit torch fp32", _search_compkit_fp32),
    "faiss": ("faiss IndexFlatIP", _search_faiss),
    "sklearn": ("sklearn brute", _search_sklearn),
}


def _run_in_child(method: str, data_path: str, k: int) -> dict:
    import torch  # noqa: F401  imported before the clock starts, as every method's library is

    embeddings = np.load(data_path)
    rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    machine_started, cpu_started, started = _machine_busy_seconds(), _cpu_seconds(), time.perf_counter()
    (similarities, indices), description = METHODS[method][1](embeddings, k)
    seconds, cpu_seconds = time.perf_counter() - started, _cpu_seconds() - cpu_started
    others = (_machine_busy_seconds() - machine_started - cpu_seconds) / seconds if machine_started else None
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "other_cores": others, "peak_rss_mb": peak_rss_mb,
            "rss_before_mb": rss_before_mb, "description": description,
            "similarities": np.asarray(similarities, dtype=np.float32), "indices": np.asarray(indices)}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _machine_busy_seconds() -> float | None:
    """Return the CPU seconds all processes have used since boot (Linux), to tell how busy the machine was."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def recall_at_k(indices: np.ndarray, truth: np.ndarray) -> float:
    """Return the mean fraction of each row's true neighbours that ``indices`` found."""
    both = np.sort(np.concatenate([indices, truth], axis=1), axis=1)
    return float((both[:, 1:] == both[:, :-1]).sum() / truth.size)


def similarity_error(embeddings: np.ndarray, similarities: np.ndarray, indices: np.ndarray) -> float:
    """Return the largest |returned similarity - float64 dot product| over all returned pairs."""
    worst = 0.0
    for start in range(0, len(embeddings), 2000):
        rows = embeddings[start:start + 2000].astype(np.float64)
        exact = np.einsum("qd,qkd->qk", rows, embeddings[indices[start:start + 2000]].astype(np.float64))
        worst = max(worst, float(np.abs(similarities[start:start + 2000] - exact).max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=70_000, help="number of embeddings (searched against themselves)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="smoke run on 5,000 embeddings")
    parser.add_argument("--repeat", type=int, default=1, help="runs per method; the fastest is reported")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated subset of {','.join(METHODS)} (sklearn is the slowest by far)")
    args = parser.parse_args()
    n_rows = 5_000 if args.quick else args.n

    methods = [key.strip() for key in args.methods.split(",")]
    if unknown := set(methods) - set(METHODS):
        parser.error(f"unknown method(s) {', '.join(sorted(unknown))}: choose from {', '.join(METHODS)}")
    if "faiss" in methods and importlib.util.find_spec("faiss") is None:
        print("faiss is not installed (pip install faiss-cpu): recall is measured against compkit fp32")
        methods.remove("faiss")
    reference_method = next((key for key in ("faiss", "fp32") if key in methods), methods[0])

    embeddings = clustered_embeddings(n_rows, args.dim)
    print(f"exact cosine top-{args.k} of {n_rows:,} x {args.dim} float32 embeddings against themselves")
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        data_path = str(Path(scratch) / "embeddings.npy")
        np.save(data_path, embeddings)
        for _ in range(args.repeat):  # round-robin, so that a busy spell on the machine hits every method
            for method in methods:
                spawn = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                    run = pool.submit(_run_in_child, method, data_path, args.k).result()
                if method not in results or run["seconds"] < results[method]["seconds"]:
                    results[method] = run
                print(f"  {METHODS[method][0]}: {run['seconds']:.2f} s wall, {run['cpu_seconds']:.2f} s CPU, "
                      f"other processes {_format_cores(run['other_cores'])}", flush=True)

    truth = results[reference_method]
    versus = "vs " + reference_method
    print(f"{'method':<20} {'wall (s)':>9} {versus:>10} {'CPU (s)':>9} {versus:>10} {'others':>10} "
          f"{'recall@' + str(args.k):>10} {'max sim err':>12} {'peak RSS (MB)':>14} {'before search':>14}  backend")
    for method, run in results.items():
        recall = recall_at_k(run["indices"], truth["indices"])
        error = similarity_error(embeddings, run["similarities"], run["indices"])
        print(f"{METHODS[method][0]:<20} {run['seconds']:>9.2f} {run['seconds'] / truth['seconds']:>9.2f}x "
              f"{run['cpu_seconds']:>9.2f} {run['cpu_seconds'] / truth['cpu_seconds']:>9.2f}x "
              f"{_format_cores(run['other_cores']):>10} {recall:>10.5f} "
              f"{error:>12.1e} {run['peak_rss_mb']:>14.0f} {run['rss_before_mb']:>14.0f}  {run['description']}")


def _format_cores(cores: float | None) -> str:
    return "n/a" if cores is None else f"{max(cores, 0.0):.1f} cores"


if __name__ == "__main__":
    main()
