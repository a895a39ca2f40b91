"""Work on a dask.distributed cluster: one client per scheduler address, and paths as each machine sees them.

Tasks carry the submitting machine's paths (the workspace root, a weights file, a memory-mapped array). A
worker that mounts the shared folder elsewhere sets `COMPKIT_PATH_MAP="/submitter/prefix=/worker/prefix"`
(several pairs separated by `;`); `on_this_machine` rewrites the longest matching prefix, and leaves every
other path as it is (the same mount point on every machine needs no map).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from compkit.errors import BackendUnavailable, ConfigError

PATH_MAP_ENV = "COMPKIT_PATH_MAP"
CONNECT_TIMEOUT_S = 10
INSTALL_HINT = "pip install 'compkit[dask]'"
_OPEN_CLIENTS: list = []


def client_for(scheduler):
    """Return a dask.distributed Client for `scheduler` (an address, or a Client, returned as is)."""
    if hasattr(scheduler, "submit"):
        return scheduler
    if not scheduler:
        raise ConfigError("a Dask scheduler address is needed (e.g. --scheduler tcp://10.0.0.5:8786)")
    return _connect(str(scheduler))


@functools.cache
def _connect(address: str):
    """Return one Client per scheduler address for the whole process (training, embedding and search share it)."""
    try:
        from dask.distributed import Client
    except ImportError:
        raise BackendUnavailable(f"running on a Dask cluster needs dask.distributed: {INSTALL_HINT}") from None
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0][:160]
        raise ConfigError(f"--scheduler {address!r}: cannot reach the Dask scheduler ({reason})") from None
    _OPEN_CLIENTS.append(client)
    return client


def close_clients() -> None:
    """Close every client `client_for` opened (a process that talks to one cluster after another)."""
    for client in _OPEN_CLIENTS:
        client.close()
    _OPEN_CLIENTS.clear()
    _connect.cache_clear()


def path_map(value: str | None = None) -> list[tuple[str, str]]:
    """Return the (submitter prefix, this machine's prefix) pairs of `COMPKIT_PATH_MAP`, longest first."""
    value = os.environ.get(PATH_MAP_ENV, "") if value is None else value
    pairs = []
    for item in filter(None, (part.strip() for part in value.split(";"))):
        source, equals, target = item.partition("=")
        if not equals or not source.startswith("/") or not target.startswith("/"):
            raise ConfigError(f"{PATH_MAP_ENV}: {item!r} is not /submitter/prefix=/this/machine/prefix")
        pairs.append((source.rstrip("/") or "/", target.rstrip("/") or "/"))
    return sorted(pairs, key=lambda pair: len(pair[0]), reverse=True)


def on_this_machine(path: str | Path) -> Path:
    """Return `path`, a submitting machine's absolute path, as this machine reaches it (`COMPKIT_PATH_MAP`)."""
    text = str(path)
    for source, target in path_map():
        if text == source or text.startswith(source.rstrip("/") + "/"):
            return Path(target + text[len(source):]) if source != "/" else Path(target) / text.lstrip("/")
    return Path(path)


def task_threads() -> int | None:
    """Return the torch threads for a task on this Dask worker: its machine's cores over the worker's task slots.

    None outside a worker, or when OMP_NUM_THREADS is set (the machine's owner chose).
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    try:
        from distributed import get_worker

        slots = get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        return None
    return max(1, (os.cpu_count() or 1) // max(1, slots))
