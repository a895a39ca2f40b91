"""Locks between compkit processes: flock on a lock file, so the kernel drops a lock when its holder dies."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from compkit.errors import CompkitError


@contextlib.contextmanager
def exclusive_lock(path: Path, *, holder: str, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on the lock file `path`, with this process's pid written in it.

    Without `wait`, raise CompkitError at once when another process holds it ("another `holder` is running
    (pid N)"); with `wait`, block until it is free. The kernel drops the lock of a holder that dies, even by
    kill -9, so a lock is never stale. The file exists only while the lock is held (a killed holder's is reused).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = _acquire(path, holder=holder, wait=wait)
    try:
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        yield
    finally:
        path.unlink(missing_ok=True)  # still holding the lock: see _acquire
        os.close(descriptor)


def _acquire(path: Path, *, holder: str, wait: bool) -> int:
    """Return a descriptor of the lock file, locked; opened again when its holder removed it while we waited."""
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            with contextlib.suppress(FileNotFoundError):
                if os.path.samestat(os.fstat(descriptor), os.stat(path)):
                    return descriptor
        except BlockingIOError:
            pid = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise CompkitError(f"another {holder} is running (pid {pid}); it holds {path}") from None
        except BaseException:
            os.close(descriptor)
            raise
        os.close(descriptor)
