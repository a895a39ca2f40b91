"""Faults of the machine (a file size limit, a full disk, a read-only workspace): one line, nothing lost."""

import errno
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

from conftest import matcher_competition
from test_cli_pipeline import invoke

ENV = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_file_size_limit_during_fetch_is_one_line_and_leaves_no_data_or_scratch(tmp_path):
    folder = matcher_competition(tmp_path, "fault-fetch")
    work = tmp_path / "work"
    done = subprocess.run([sys.executable, "-m", "compkit.cli", "fetch", "-c", str(folder), "--workspace", str(work)],
                          env=ENV, capture_output=True, text=True, preexec_fn=_limit_file_size(2048))
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "file too large" in errors[0] and str(work) in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    root = work / "fault-fetch"
    assert not (root / "data").exists()
    assert [p.name for p in root.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")] == []


def test_a_full_disk_while_writing_an_artifact_keeps_the_old_one(tuned_workspace, monkeypatch):
    folder, base = tuned_workspace
    csv = next(base.glob("*/submissions/phash.csv"))
    before = csv.read_bytes()
    real_replace = os.replace

    def full(source, target, *args, **kwargs):
        if Path(target) == csv:
            raise OSError(errno.ENOSPC, "No space left on device", str(source))
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full)
    result = invoke("predict", "-c", folder, "--workspace", base, "--model", "phash", "--force")
    assert result.exit_code == 1
    assert "no space left on the device" in result.output and ".phash.csv.tmp-" in result.output
    assert csv.read_bytes() == before
    assert [p.name for p in csv.parent.iterdir() if p.name.startswith(".")] == []


def test_a_read_only_workspace_is_one_line_naming_the_path(tmp_path, monkeypatch):
    folder = matcher_competition(tmp_path, "read-only")
    work = tmp_path / "work"
    (work / "read-only").mkdir(parents=True)
    if os.geteuid() != 0:
        (work / "read-only").chmod(0o555)
    else:  # root writes through file modes: refuse the workspace's writes as a read-only mount would
        real_mkdir = Path.mkdir

        def read_only(self, *args, **kwargs):
            if self.is_relative_to(work):
                raise OSError(errno.EROFS, "Read-only file system", str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", read_only)
    result = invoke("fetch", "-c", folder, "--workspace", work)
    (work / "read-only").chmod(0o755)
    assert result.exit_code == 1
    assert str(work / "read-only") in result.output
    assert "read-only" in result.output or "permission denied" in result.output
    assert "unexpected" not in result.output and len(result.output.strip().splitlines()) == 1
    assert list((work / "read-only").iterdir()) == []


def test_workspace_naming_a_file_is_refused_not_reported_missing(tmp_path):
    folder = matcher_competition(tmp_path, "file-workspace")
    not_a_folder = tmp_path / "work.txt"
    not_a_folder.write_text("x")
    result = invoke("status", "-c", folder, "--workspace", not_a_folder)
    assert result.exit_code == 1
    assert f"{not_a_folder} is a file, not a folder" in result.output
