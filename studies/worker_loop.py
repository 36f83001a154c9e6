"""One worker of a study (the `study run` process itself, or one of its --workers processes).

A worker joins the study (registers its presence and marks the MLflow parent run RUNNING), then
loops: fail and re-queue the trials of dead workers (studies/recovery.py) *before* counting the
budget, run trials while the budget, the timeout and the search space allow, and when nothing is
left to start, wait while other workers' trials are still RUNNING, for at most `grace_seconds` +
`heartbeat_seconds`: long enough to see a worker that died on them go silent, fail its trial and
run the retry. It then leaves: marks its presence ended and, if no other worker of the study is
alive, closes the parent run (FINISHED, or KILLED when stopped by a signal, FAILED on an error).
SIGTERM/SIGINT stop it gracefully (studies/stopping.py); the trial they interrupt is re-queued.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from optuna.trial import TrialState

from foundation.errors import AmpStudyError, StopRequested
from studies import mlflow_runs
from studies.budget import BudgetCallback, budget_left, never_trained, remaining_trials, samples_spent
from studies.objective import TrialObjective
from studies.recovery import TrialRecovery, fail_orphaned_trials, requeue_trial
from studies.sampling import make_pruner, make_sampler
from studies.spec import StudySpec
from studies.stopping import GracefulStop
from studies.storage import open_storage, storage_lock
from studies.workers import WorkerPresence, other_live_workers

POLL_SECONDS = 1.0  # how often a waiting worker looks at other workers' trials


@dataclass(frozen=True)
class RunPlan:
    """Everything a worker process needs; plain data so it pickles into spawned processes."""

    spec: StudySpec
    storage_url: str
    tracking_uri: str
    parent_run_id: str
    n_trials: int  # 0 = no trial limit
    timeout_seconds: float  # 0 = no time limit
    workers: int
    run_number: int = 0  # the how-many-th `study run` of this study (seeds the sampler streams)
    fingerprint: str = ""  # the study settings' fingerprint new trials are tagged with


def workers_lock(storage_url: str, study_name: str) -> Any:
    """Serialises joining, leaving and taking run numbers, so that exactly the last worker to leave
    closes the parent run."""
    return storage_lock(storage_url, f"{study_name}:workers")


def trial_recovery(plan: RunPlan) -> TrialRecovery:
    spec = plan.spec

    def close_run(number: int, message: str, status: str) -> None:
        mlflow_runs.record_trial_outcome(plan.tracking_uri, plan.parent_run_id, spec.name, number,
                                         spec.base.experiment, "FAIL", error=message, run_status=status)

    return TrialRecovery(spec.options.storage.max_retries, spec.options.storage.grace_seconds, close_run)


def open_study(plan: RunPlan, worker_index: int = 0) -> tuple[Any, TrialRecovery]:
    import optuna

    cfg = plan.spec.options.storage
    recovery = trial_recovery(plan)
    storage = open_storage(plan.storage_url, heartbeat_seconds=cfg.heartbeat_seconds,
                           grace_seconds=cfg.grace_seconds, on_stale=recovery)
    study = optuna.load_study(study_name=plan.spec.name, storage=storage, pruner=make_pruner(plan.spec),
                              sampler=make_sampler(plan.spec, plan.run_number, worker_index))
    return study, recovery


def close_parent_if_last(plan: RunPlan, study: Any, me: str, status: str) -> bool:
    """Close the parent run with `status` unless another worker of the study is alive; under the
    workers lock. Returns whether it closed it."""
    if other_live_workers(study, me, plan.spec.options.storage.grace_seconds):
        return False
    mlflow_runs.set_parent_status(plan.tracking_uri, plan.parent_run_id, status)
    return True


def run_worker(plan: RunPlan, worker_index: int) -> None:
    """Work on the study until the budget or timeout is used up (see the module docstring)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO)
    quiet_library_warnings()
    _limit_threads(plan)
    study, recovery = open_study(plan, worker_index)
    presence = WorkerPresence(study, plan.spec.options.storage.heartbeat_seconds,
                              run=plan.run_number, index=worker_index)
    problem = mlflow_runs.tracking_problem(plan.tracking_uri, plan.parent_run_id)
    if problem is not None:
        raise AmpStudyError(problem)
    with GracefulStop() as stop:
        objective = TrialObjective(plan.spec, plan.parent_run_id, plan.tracking_uri, plan.n_trials,
                                   fingerprint=plan.fingerprint, stop=stop)
        with workers_lock(plan.storage_url, plan.spec.name):
            presence.start()
            mlflow_runs.set_parent_status(plan.tracking_uri, plan.parent_run_id, "RUNNING")
        outcome = "FAILED"
        try:
            _work(plan, study, objective, stop, recovery, worker_index)
            outcome = "KILLED" if stop.requested else "FAILED" if objective.tracking_problem else "FINISHED"
            requeued = _requeue_stopped_trial(plan, study, objective.stopped_trial)
        finally:
            _leave(plan, study, presence, outcome)
    if objective.tracking_problem is not None:
        what = f"trial {objective.stopped_trial} was " + ("re-queued" if requeued else "not re-queued")
        raise AmpStudyError(f"{objective.tracking_problem} ({what}; it does not count against the budget)")
    if stop.requested:
        stopped = objective.stopped_trial
        what = "" if stopped is None else f": trial {stopped} was failed and " + (
            "re-queued" if requeued else "not re-queued")
        raise StopRequested(stop.signum, f"stopped by {_signal_name(stop.signum)}{what}; "
                                         "run the same command to resume the study")


def _work(plan: RunPlan, study: Any, objective: TrialObjective, stop: GracefulStop, recovery: TrialRecovery,
          worker_index: int) -> None:
    grace = plan.spec.options.storage.grace_seconds
    wait_limit = grace + plan.spec.options.storage.heartbeat_seconds
    deadline = time.monotonic() + plan.timeout_seconds if plan.timeout_seconds else None

    def recover(s: Any) -> None:
        fail_orphaned_trials(s, grace, recovery)

    total_samples = plan.spec.budget.total_samples
    callback = BudgetCallback(plan.n_trials, recover, should_stop=lambda: stop.requested or objective.exhausted
                              or objective.tracking_problem is not None,
                              total_samples=total_samples)
    waiting_since = None
    while not stop.requested and objective.tracking_problem is None:
        recover(study)  # before counting: a dead worker's trial must not hold a place in the budget
        time_left = None if deadline is None else deadline - time.monotonic()
        left = budget_left(study, plan.n_trials, total_samples)
        if left and (time_left is None or time_left > 0) and not objective.exhausted:
            study.optimize(objective, n_trials=None, timeout=time_left, catch=(Exception,),
                           callbacks=[callback, _collect_garbage_after_training])
            waiting_since = None
            continue
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if waiting_since is None:
            print(f"worker {worker_index}: " + _why_done(plan, study, objective, left), flush=True)
        if not running:
            break
        if waiting_since is None:
            waiting_since = time.monotonic()
            print(f"worker {worker_index}: waiting up to {wait_limit:g} s for trial(s) "
                  f"{', '.join(str(t.number) for t in running)} of other workers (retried here if their "
                  "worker died)", flush=True)
        elif time.monotonic() - waiting_since > wait_limit:
            break  # their workers are alive: each finishes its own trial
        time.sleep(POLL_SECONDS)


def _requeue_stopped_trial(plan: RunPlan, study: Any, number: int | None) -> bool:
    """A trial a stop signal (or a tracking store that stopped taking its runs) interrupted was not
    the model's fault: it runs again on resume, without counting against storage.max_retries."""
    if number is None:
        return False
    return requeue_trial(study, study.get_trials(deepcopy=False)[number], plan.spec.options.storage.max_retries,
                         stopped=True)


def _collect_garbage_after_training(study: Any, trial: Any) -> None:
    """Optuna's gc_after_trial, but only after a trial that trained: a full collection walks every
    Python object, and with torch and Lightning loaded there are many; duplicate proposals or
    surplus trials allocate nothing."""
    if not never_trained(trial):
        gc.collect()


def _why_done(plan: RunPlan, study: Any, objective: TrialObjective, left: bool) -> str:
    if objective.exhausted:
        return "the sampler keeps proposing parameters that were tried already: the search space looks exhausted"
    if not left and plan.n_trials and remaining_trials(study, plan.n_trials) <= 0:
        return f"the study has its {plan.n_trials} trials"
    if not left:
        return f"the study's trials have trained {samples_spent(study):,} of budget.total_samples " \
               f"{plan.spec.budget.total_samples:,} samples"
    return f"the timeout of {plan.timeout_seconds:g} s has passed"


def _leave(plan: RunPlan, study: Any, presence: WorkerPresence, outcome: str) -> None:
    try:
        with workers_lock(plan.storage_url, plan.spec.name):
            presence.end()
            close_parent_if_last(plan, study, presence.worker, outcome)
    except Exception as err:  # the database may be what failed; the next run repairs the parent run
        logging.getLogger("ampstudy").warning(f"could not leave the study cleanly: {err}")


def worker_process(plan: RunPlan, worker_index: int) -> None:
    """A spawned local worker (started by studies.stopping.worker_entry, which has made it die with
    its parent): a stop signal becomes the exit code."""
    try:
        run_worker(plan, worker_index)
    except StopRequested as stop:
        print(f"worker {worker_index}: {stop}", file=sys.stderr, flush=True)
        sys.exit(128 + stop.signum)
    except AmpStudyError as err:
        print(f"worker {worker_index}: {err}", file=sys.stderr, flush=True)
        sys.exit(2)


def _signal_name(signum: int) -> str:
    import signal

    return signal.Signals(signum).name


class _SkipUnrunTrialWarnings(logging.Filter):
    """Optuna logs every FAIL with a traceback; a duplicate proposal or surplus trial is not an error,
    and a stop or a tracking store gone is said in one line when the worker ends."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(f"{kind}(" in message
                       for kind in ("DuplicateParams", "BudgetExceeded", "StopRequested", "TrackingUnavailable"))


def quiet_library_warnings() -> None:
    """Hide warnings that say nothing actionable about a study (they repeat once per trial)."""
    import warnings

    from optuna.exceptions import ExperimentalWarning

    warnings.filterwarnings("ignore", category=ExperimentalWarning)
    for pattern in (".*log_every_n_steps.*", ".*LeafSpec.*", ".*divide by zero encountered in log10.*",
                    ".*PedAnovaImportanceEvaluator computes.*", ".*have less than 2 trials.*"):
        warnings.filterwarnings("ignore", message=pattern)
    optimize_logger = logging.getLogger("optuna.study._optimize")  # where Optuna logs failed trials
    if not any(isinstance(f, _SkipUnrunTrialWarnings) for f in optimize_logger.filters):
        optimize_logger.addFilter(_SkipUnrunTrialWarnings())


def _limit_threads(plan: RunPlan) -> None:
    """N workers on one machine share its cores instead of each grabbing all of them."""
    if plan.workers > 1 and plan.spec.base.train.threads == 0:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // plan.workers))
