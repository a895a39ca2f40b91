"""A dask.distributed cluster of separate processes on loopback: `dask scheduler` and `dask worker`s, as a
competitor starts them on several machines (README: Running on several machines)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DASK = Path(sys.executable).with_name("dask")
START_TIMEOUT_S = 60


@dataclass
class ProcessCluster:
    folder: Path
    scheduler: subprocess.Popen | None = None
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def scheduler_file(self) -> Path:
        return self.folder / "scheduler.json"

    @property
    def address(self) -> str:
        return json.loads(self.scheduler_file.read_text())["address"]

    def start_scheduler(self) -> None:
        self.scheduler = self._spawn("scheduler", [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                                   "--no-dashboard", "--scheduler-file", str(self.scheduler_file)])
        _wait(lambda: self.scheduler_file.is_file(), "the scheduler to write its file", self.scheduler)

    def start_worker(self, name: str, env: dict[str, str] | None = None) -> None:
        """Start a worker process (no nanny: a killed worker stays dead) with one task slot and one thread."""
        command = [str(DASK), "worker", self.address, "--name", name, "--nworkers", "1", "--nthreads", "1",
                   "--no-nanny", "--no-dashboard", "--host", "127.0.0.1", "--death-timeout", "60"]
        self.workers[name] = self._spawn(f"worker-{name}", command, {"OMP_NUM_THREADS": "1", **(env or {})})

    def wait_for_workers(self, count: int) -> None:
        from distributed import Client

        with Client(self.address, timeout=START_TIMEOUT_S) as client:
            client.wait_for_workers(count, timeout=START_TIMEOUT_S)

    def kill_worker(self, name: str) -> None:
        self.workers[name].send_signal(signal.SIGKILL)
        self.workers[name].wait(timeout=10)

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        from compkit.cluster import close_clients

        close_clients()
        for process in self.workers.values():
            process.kill()  # a worker that is told to stop waits for its tasks: the test is over
        if self.scheduler is not None and self.scheduler.poll() is None:
            self.scheduler.terminate()
        for process in [*self.workers.values(), self.scheduler]:
            if process is not None:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = (self.folder / f"{name}.log").open("w")
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder,
                                env={**os.environ, **(env or {})})


def _wait(ready, what: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"waiting for {what}: the process exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"waiting for {what}")
        time.sleep(0.1)


def start_cluster(folder: Path, workers: int = 2, env: dict[str, str] | None = None) -> ProcessCluster:
    folder.mkdir(parents=True, exist_ok=True)
    cluster = ProcessCluster(folder)
    try:
        cluster.start_scheduler()
        for index in range(workers):
            cluster.start_worker(f"w{index}", env)
        cluster.wait_for_workers(workers)
    except BaseException:
        cluster.stop()
        raise
    return cluster
