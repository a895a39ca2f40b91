"""A real PostgreSQL server for the tests: Debian's `postgresql`, on a free loopback port, in a scratch folder.

initdb refuses to run as root, so as root the server runs as the `postgres` system user, in a folder made
with tempfile.mkdtemp and handed to it (pytest's tmp_path under /tmp/pytest-of-root is not open to it).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

INSTALL_HINT = "PostgreSQL (initdb, pg_ctl) is not installed: `make postgres` installs Debian's postgresql"
SERVER_USER = "postgres"
DATABASE_USER = "compkit"


def postgres_bin() -> Path | None:
    """Return the folder of initdb and pg_ctl (the newest installed PostgreSQL's), None when there is none."""
    found = [Path(path).parent for path in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    if not found:
        initdb = shutil.which("initdb")
        return Path(initdb).parent if initdb else None
    return max(found, key=lambda folder: int(folder.parent.name) if folder.parent.name.isdigit() else 0)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresTestServer:
    """`with PostgresTestServer(bin_dir) as url:` a running server, reached at `url` (trust auth, no password)."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir, self.port = bin_dir, free_port()
        self.root = Path(tempfile.mkdtemp(prefix="compkit-postgres-"))
        self.data = self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql://{DATABASE_USER}@127.0.0.1:{self.port}/postgres"

    def __enter__(self) -> str:
        try:
            if os.geteuid() == 0:
                shutil.chown(self.root, user=SERVER_USER)
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", DATABASE_USER, "--no-sync")
            options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
            self._run("pg_ctl", "-D", str(self.data), "-w", "-l", str(self.root / "server.log"), "-o", options,
                      "start")
        except BaseException:
            self._remove()
            raise
        return self.url

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            self._remove()

    def _run(self, program: str, *arguments: str) -> None:
        command = [str(self.bin_dir / program), *arguments]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.is_file() else ""
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.strip()}\n{tail}")

    def _remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
