"""The trials of workers that died: found, failed once, retried, and their MLflow runs closed.

A worker that dies (SIGKILL, OOM killer, power cut, a machine gone) leaves its trial RUNNING. A
trial is orphaned when its worker (trial user attr `worker` = "host:pid") is known to be gone:
- a process on this host that no longer exists, or whose study entry says it ended;
- a worker on another host whose heartbeat (studies/workers.py) is older than `grace_seconds`;
- on SQL storages also Optuna's own trial heartbeat older than `grace_seconds` (this covers
  workers on other hosts that never registered, e.g. an older ampstudy);
- no worker recorded `grace_seconds` after the trial started (killed between ask and record).
An orphaned trial is marked FAIL (exactly once, even when several workers race), a WAITING copy
with the same parameters is queued (at most `max_retries` times per original trial; trials a stop
signal ended are re-queued without counting) and its
MLflow run is closed FAILED with the reason. Workers run this at start-up before counting the
budget, after every trial, and while waiting for other workers' trials before they exit.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from studies.workers import host_name, pid_alive, registered_workers, worker_alive

WORKER_ATTR = "worker"  # trial user attr "host:pid" of the process running it
RETRY_ATTR = "retry_history"  # trial system attr: numbers of the failed trials this one retries
STOPPED_ATTR = "stopped_history"  # those of them a stop signal ended (not counted against max_retries)

StaleHandler = Callable[[Any, Any, str], None]  # (study, failed frozen trial, reason)


def orphaned_trials(study: Any, grace_seconds: float) -> list[tuple[Any, str]]:
    """(trial, reason) for every RUNNING trial whose worker is gone (see the module docstring)."""
    from optuna.trial import TrialState

    workers = registered_workers(study)
    now, wall = datetime.now(), time.time()
    found = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR)
        if worker is None:
            if now - (trial.datetime_start or now) > timedelta(seconds=grace_seconds):
                found.append((trial, f"no worker recorded {grace_seconds:g} s after the trial started"))
            continue
        entry = workers.get(worker)
        if worker_alive(worker, entry, grace_seconds, wall) is not False:
            continue
        host, _, pid = worker.rpartition(":")
        local = host == host_name() and pid.isdigit()
        if entry is not None and entry.get("ended"):
            found.append((trial, f"worker {worker} ended without finishing the trial"))
        elif local and not pid_alive(int(pid)):
            found.append((trial, f"worker {worker} is gone (process {pid} on this host no longer exists)"))
        elif entry is not None and wall - float(entry.get("beat", 0)) > grace_seconds:
            found.append((trial, f"no heartbeat from worker {worker} for {wall - float(entry['beat']):.0f} s "
                                 f"(storage.grace_seconds = {grace_seconds:g})"))
        else:
            found.append((trial, f"worker {worker} is gone (its process no longer exists)"))
    return found


def fail_orphaned_trials(study: Any, grace_seconds: float, on_stale: StaleHandler) -> int:
    """Fail every orphaned trial once and hand it to `on_stale`; returns how many this call failed.
    On SQL storages Optuna's heartbeat check runs too (its callback is the storage's on_stale)."""
    import warnings

    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    failed = 0
    for trial, reason in orphaned_trials(study, grace_seconds):
        try:
            if not study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue  # another worker got there first
        failed += 1
        on_stale(study, copy.deepcopy(study._storage.get_trial(trial._trial_id)), reason)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # a no-op without SQL heartbeats
    return failed


def requeue_trial(study: Any, trial: Any, max_retries: int, *, stopped: bool = False) -> bool:
    """Queue a WAITING copy of a failed trial (same params), like Optuna's RetryFailedTrialCallback.

    `stopped`: a stop signal ended the trial (an operator's choice, not a fault of the trial): it is
    always re-queued and never counts. Returns False once the original trial has failed
    `max_retries` times for other reasons (a dead worker, a crash).
    """
    import optuna

    history = [*trial.system_attrs.get(RETRY_ATTR, []), trial.number]
    stops = [*trial.system_attrs.get(STOPPED_ATTR, []), *([trial.number] if stopped else [])]
    if len(history) - len(stops) > max_retries:
        return False
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        system_attrs={"failed_trial": history[0], RETRY_ATTR: history, STOPPED_ATTR: stops}))
    return True


class TrialRecovery:
    """The handler for a failed orphaned trial: re-queue it and close its MLflow run FAILED with the
    reason. Also Optuna's heartbeat_stale_trial_callback (called without a reason)."""

    def __init__(self, max_retries: int, grace_seconds: float,
                 close_run: Callable[[int, str, str], None]) -> None:
        self.max_retries = max_retries
        self.grace_seconds = grace_seconds
        self.close_run = close_run  # (trial number, error text, MLflow run status)

    def __call__(self, study: Any, trial: Any, reason: str | None = None) -> None:
        reason = reason or f"no trial heartbeat for more than {self.grace_seconds:g} s (storage.grace_seconds)"
        retried = requeue_trial(study, trial, self.max_retries)
        message = (f"worker died mid-trial: {reason}; "
                   + ("re-queued with the same parameters" if retried else "retries exhausted"))
        logging.getLogger("ampstudy").warning(f"trial {trial.number}: {message}")
        try:
            self.close_run(trial.number, message, "FAILED")
        except Exception as err:  # never let tracking trouble stop the recovery of the study
            logging.getLogger("ampstudy").warning(f"could not close the MLflow run of trial {trial.number}: {err}")
