"""A study's total trial budget, shared by every process that tunes it.

`--trials N` means the study ends with N COMPLETE trials, however many processes run it. A process asks for
a trial only while fewer than N trials are complete, running or waiting; two processes that ask at once may
still both get one, so each trial checks its rank (its place among the counted trials, by number, which the
RDB storage gives in creation order) and one ranked beyond N is pruned unrun, marked `over_budget`. A process
whose budget is spent waits for the trials still running elsewhere, so a trial whose process died is failed
once its heartbeat is stale, its parameters are run again (the storage's retry callback queues them as a
WAITING trial), and the study still ends with N. A trial whose `process` is one of this machine's process
table (same kernel boot, same pid namespace) that no longer exists, a tuner killed here and run again, is
failed at once, without waiting for its heartbeat to go stale; one killed before it recorded any (between
its creation and its first beat) is failed once it is older than the grace period.
"""

from __future__ import annotations

import datetime
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from compkit.workspace import is_running

POLL_S = 0.5  # how often a process whose budget is spent looks at the trials running elsewhere
OVER_BUDGET_ATTR = "over_budget"
WORKER_ATTR = "worker"
PROCESS_ATTR = "process"  # <kernel boot id>/<pid namespace>/<pid>: a pid that means one process, here


@dataclass(frozen=True)
class BudgetState:
    complete: int
    counted: int  # complete, running and waiting: the trials the budget is spent on
    waiting: int


def budget_state(study) -> BudgetState:
    """Return how much of the study's budget its trials spend now."""
    from optuna.trial import TrialState

    states = [trial.state for trial in study.get_trials(deepcopy=False)]
    complete, waiting = states.count(TrialState.COMPLETE), states.count(TrialState.WAITING)
    return BudgetState(complete, complete + waiting + states.count(TrialState.RUNNING), waiting)


def rank_in_budget(study, number: int) -> int:
    """Return the place of trial `number` among the study's counted trials (1 for the first)."""
    from optuna.trial import TrialState

    counted = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    return sum(1 for trial in study.get_trials(deepcopy=False, states=counted) if trial.number <= number)


def optimize_to_total(study, objective: Callable, *, total: int, on_complete: Callable[[], None]) -> int:
    """Run trials of `objective` until the study holds `total` COMPLETE trials, never more; return how many of
    them this process ran (each trial's `worker` user attribute names the host and process that ran it)."""
    import optuna
    from optuna.storages._heartbeat import is_heartbeat_enabled

    worker = f"{socket.gethostname()}:{os.getpid()}"
    table = process_table()
    beats = is_heartbeat_enabled(study._storage)  # an in-memory study (the greedy ensemble's) has no heartbeat
    ran_here = 0
    if beats:
        _fail_dead_trials(study)

    def budgeted(trial) -> float:
        # The first beat, now: Optuna's heartbeat thread beats soon after, but a trial killed before any beat
        # would never go stale, and the processes waiting for it would wait forever.
        if beats:
            study._storage.record_heartbeat(trial._trial_id)
        trial.set_user_attr(WORKER_ATTR, worker)
        if table:
            trial.set_user_attr(PROCESS_ATTR, f"{table}/{os.getpid()}")
        if rank_in_budget(study, trial.number) > total:
            trial.set_user_attr(OVER_BUDGET_ATTR, total)
            raise optuna.TrialPruned(f"the study's {total} trials are taken")
        return objective(trial)

    def counted(_study, trial) -> None:
        nonlocal ran_here
        if trial.state == optuna.trial.TrialState.COMPLETE:
            ran_here += 1
            on_complete()

    while (state := budget_state(study)).complete < total:
        if state.counted < total or state.waiting:
            study.optimize(budgeted, n_trials=1, callbacks=[counted])
        else:  # every trial left is running elsewhere: wait for them, or for their heartbeat to go stale
            time.sleep(POLL_S)
            _fail_dead_trials(study)
            _fail_stale_trials(study)
    return ran_here


def _fail_stale_trials(study) -> None:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _fail_dead_trials(study) -> None:
    """Fail the running trials known to be dead, and queue their retry (the storage's stale-trial callback, as
    a stale heartbeat would): those run by a process of this process table that is gone, and those that
    never began (no `worker`: killed between the trial's creation and its first beat, so no heartbeat will
    ever go stale) once they are older than the heartbeat grace period."""
    import optuna
    from optuna.trial import TrialState

    table, storage = process_table(), study._storage
    grace = getattr(storage, "grace_period", None) or 2 * storage.get_heartbeat_interval()
    never_began = datetime.datetime.now() - datetime.timedelta(seconds=grace)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        where, _, pid = str(trial.user_attrs.get(PROCESS_ATTR, "")).rpartition("/")
        gone = bool(table) and where == table and pid.isdigit() and not is_running(int(pid))
        if not gone and not (WORKER_ATTR not in trial.user_attrs and trial.datetime_start is not None
                             and trial.datetime_start < never_began):
            continue
        try:
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # another process failed it first
            continue
        retry = storage.get_heartbeat_stale_trial_callback()
        if retry is not None:
            retry(study, storage.get_trial(trial._trial_id))


def process_table() -> str:
    """Return what names this process table (kernel boot id and pid namespace), or "" where it is unknown:
    a hostname alone does not, since containers sharing the host's network share its hostname too."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""
    return f"{boot}/{namespace}"

