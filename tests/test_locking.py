"""Locks between compkit processes: refused at once while held, free again when their holder dies."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from conftest import lock_held_elsewhere

from compkit.errors import CompkitError
from compkit.locking import exclusive_lock


def test_a_held_lock_is_refused_at_once_naming_the_holder_and_free_once_released(tmp_path):
    lock = tmp_path / ".fetch.lock"

    with lock_held_elsewhere(lock) as holder, pytest.raises(
        CompkitError, match=rf"^another compkit fetch is running \(pid {holder.pid}\); it holds {lock}$"
    ), exclusive_lock(lock, holder="compkit fetch"):
        pass

    with exclusive_lock(lock, holder="compkit fetch"):
        assert lock.read_text().strip().isdigit()
    assert not lock.exists()


def test_a_lock_whose_holder_was_killed_is_free_again(tmp_path):
    lock = tmp_path / ".folds.lock"
    with lock_held_elsewhere(lock) as holder:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock.read_text().strip() == str(holder.pid)  # what kill -9 leaves behind

    with exclusive_lock(lock, holder="compkit folds"):
        pass

    assert not lock.exists()


def test_waiting_for_a_lock_blocks_until_its_holder_releases_it(tmp_path):
    lock, log = tmp_path / "ledger.csv.lock", tmp_path / "log.txt"
    script = ("import sys, time\nfrom compkit.locking import exclusive_lock\n"
              "with exclusive_lock(sys.argv[1], holder='test'):\n    print('held', flush=True)\n    time.sleep(0.3)\n"
              "    open(sys.argv[2], 'a').write('holder\\n')")
    holder = subprocess.Popen([sys.executable, "-c", script, str(lock), str(log)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"

    with exclusive_lock(lock, holder="compkit submit", wait=True), open(log, "a") as entries:
        entries.write("waiter\n")

    assert holder.wait(timeout=60) == 0
    assert log.read_text() == "holder\nwaiter\n"
