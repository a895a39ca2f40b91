"""Benchmark: wall time of `compkit train --fold all` on a Dask cluster of two worker processes, against one.

    .venv/bin/python benchmarks/cluster_train.py                                  # demo-match, lite0-arcface
    .venv/bin/python benchmarks/cluster_train.py --model convnext-64 --model lite0-arcface

Each side starts a `dask scheduler` and its `dask worker` processes on loopback (the launcher of
tests/dask_cluster.py: one task slot per worker, no nanny) and trains the chosen models of demo-match on every
fold in a fresh workspace, through the CLI as a competitor would. The reference is one worker with every
core (OMP_NUM_THREADS = cores); the other side is N workers sharing the cores (cores / N threads each), as
N machines would be on one. The ratio says what splitting folds across workers gains beyond torch's own
threads; on separate machines each worker has its own cores and the gain is near N.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the loopback cluster launcher the tests use

from dask_cluster import start_cluster  # noqa: E402

COMPKIT = Path(sys.executable).with_name("compkit")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--competition", default="demo-match")
    parser.add_argument("--model", action="append", default=None, help="models to train (default: lite0-arcface)")
    parser.add_argument("--workers", type=int, default=2)
    return parser.parse_args()


def _compkit(*args: str, cwd: Path) -> None:
    subprocess.run([str(COMPKIT), *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def timed_train(competition: str, models: list[str], workers: int, folder: Path) -> float:
    """Return the seconds of `compkit train --fold all` on a fresh workspace with `workers` worker processes."""
    work = folder / "work"
    _compkit("fetch", "-c", competition, "--workspace", str(work), cwd=ROOT)
    _compkit("folds", "-c", competition, "--workspace", str(work), cwd=ROOT)
    threads = max(1, (os.cpu_count() or 1) // workers)
    cluster = start_cluster(folder / "cluster", workers=workers, env={"OMP_NUM_THREADS": str(threads)})
    try:
        started = time.perf_counter()
        _compkit("train", "-c", competition, "--workspace", str(work), "--fold", "all",
                 *[f"--model={name}" for name in models], "--scheduler", cluster.address, cwd=ROOT)
        return time.perf_counter() - started
    finally:
        cluster.stop()


def main() -> None:
    arguments = _arguments()
    models = arguments.model or ["lite0-arcface"]
    with tempfile.TemporaryDirectory(prefix="compkit-cluster-bench-") as scratch:
        reference = timed_train(arguments.competition, models, 1, Path(scratch) / "one")
        spread = timed_train(arguments.competition, models, arguments.workers, Path(scratch) / "many")
    cores = os.cpu_count()
    print(f"{arguments.competition}, models {', '.join(models)}, train --fold all, {cores} cores")
    print(f"reference: 1 worker x {cores} threads        {reference:8.1f} s")
    print(f"compkit:   {arguments.workers} workers x {max(1, cores // arguments.workers)} threads       "
          f"{spread:8.1f} s   ratio {reference / spread:.2f}x faster")


if __name__ == "__main__":
    main()
