"""`ampstudy study run`: create or resume a study and run its trials in one or more processes.

Order of work: validate the study file (already done by load_study_spec), simulate the dataset
once (trials share the cache), create or load the Optuna study, create the MLflow parent run once,
then run workers: in this process for --workers 1, else N spawned processes on a journal file
(or the given SQL storage). Finally log the report to the parent run and print a summary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundation.configs import to_dict
from foundation.errors import AmpStudyError
from foundation.uris import masked, sqlite_path
from studies import mlflow_runs
from studies.budget import BudgetCallback, remaining_trials
from studies.objective import TrialObjective
from studies.spec import StudySpec
from studies.storage import (
    DEFAULT_JOURNAL,
    DEFAULT_SQLITE,
    absolute_url,
    check_storage_url,
    fail_dead_local_trials,
    file_lock,
    local_file,
    open_storage,
    requeue_trial,
    storage_lock,
    study_names,
)
from training import tracking

SPEC_HASH_ATTR = "spec_sha256"


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


def resolve_tracking_uri(spec: StudySpec, override: str | None = None) -> str:
    uri = override or spec.options.tracking_uri or tracking.default_tracking_uri()
    return absolute_url(uri) if uri.startswith("sqlite:///") else uri


def find_study_storage(spec: StudySpec, override: str | None = None) -> str | None:
    """The storage URL holding this study: --storage, else the study file's, else a default file
    that already contains it. None when the study exists nowhere yet."""
    explicit = override or spec.options.storage.url
    if explicit:
        return absolute_url(check_storage_url(explicit, "--storage" if override else "storage.url"))
    found = []
    for url in (DEFAULT_SQLITE, DEFAULT_JOURNAL):
        path = local_file(absolute_url(url))
        if path is not None and path.is_file() and path.stat().st_size > 0:
            if spec.name in study_names(open_storage(url)):
                found.append(absolute_url(url))
    if len(found) > 1:
        raise AmpStudyError(f"study '{spec.name}' exists in both {found[0]} and {found[1]}; pass --storage")
    return found[0] if found else None


def existing_study_storage(spec: StudySpec, override: str | None = None) -> str:
    """The storage URL of a study that must exist already (report, promote), else a clear error."""
    url = find_study_storage(spec, override)
    if url is None:
        raise AmpStudyError(f"no study named '{spec.name}' found; run `ampstudy study run {spec.path}` first "
                            "(or pass --storage)")
    return url


def storage_for_run(spec: StudySpec, override: str | None, workers: int) -> str:
    url = find_study_storage(spec, override)
    if url is not None:
        if workers > 1 and url.startswith("sqlite:"):
            logging.getLogger("ampstudy").warning(
                "several processes on one SQLite file can hit 'database is locked'; "
                "prefer --storage journal:PATH or postgresql://")
        return url
    return absolute_url(DEFAULT_JOURNAL if workers > 1 else DEFAULT_SQLITE)


def make_sampler(spec: StudySpec, worker_index: int = 0) -> Any:
    import optuna

    s = spec.options.sampler
    seed = None if s.seed < 0 else s.seed + worker_index  # workers must not sample identical points
    if s.kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.startup_trials, multivariate=s.multivariate,
                                          group=s.multivariate, constant_liar=True)
    if s.kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.kind == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)
    if s.kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=s.startup_trials)


def make_pruner(spec: StudySpec) -> Any:
    import optuna

    p = spec.options.pruner
    if p.kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_epochs)
    if p.kind == "percentile":
        return optuna.pruners.PercentilePruner(p.percentile, n_startup_trials=p.startup_trials,
                                               n_warmup_steps=p.warmup_epochs)
    if p.kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, p.warmup_epochs),
                                              max_resource=spec.base.train.max_epochs,
                                              reduction_factor=p.reduction_factor)
    return optuna.pruners.NopPruner()


class StaleTrialHandler:
    """Called for a trial whose worker died: re-queue it and close its MLflow run as KILLED."""

    def __init__(self, plan: RunPlan) -> None:
        self.plan = plan

    def __call__(self, study: Any, trial: Any) -> None:
        spec = self.plan.spec
        retried = requeue_trial(study, trial, spec.options.storage.max_retries)
        reason = ("worker died mid-trial; " + ("re-queued with the same parameters" if retried
                                               else "retries exhausted"))
        logging.getLogger("ampstudy").warning(f"trial {trial.number}: {reason}")
        try:
            mlflow_runs.record_trial_outcome(self.plan.tracking_uri, self.plan.parent_run_id, spec.name,
                                             trial.number, spec.base.experiment, "FAIL", error=reason,
                                             run_status="KILLED")
        except Exception as err:  # never let tracking trouble stop the recovery of the study
            logging.getLogger("ampstudy").warning(f"could not close MLflow run of trial {trial.number}: {err}")


def create_or_load_study(spec: StudySpec, storage_url: str) -> Any:
    import optuna

    # Under a lock: processes starting together on a fresh database would race to create its tables.
    with storage_lock(storage_url, "optuna-create-study"):
        storage = open_storage(storage_url)
        study = optuna.create_study(storage=storage, study_name=spec.name, directions=spec.directions,
                                    load_if_exists=True)
    if len(study.directions) != len(spec.directions):
        raise AmpStudyError(f"study '{spec.name}' in {masked(storage_url)} has {len(study.directions)} objective(s) but the "
                            f"file now asks for {len(spec.directions)}; rename the study (name = ...)")
    digest = spec_digest(spec)
    previous = study.user_attrs.get(SPEC_HASH_ATTR)
    if previous is None:
        study.set_user_attr(SPEC_HASH_ATTR, digest)
        study.set_user_attr("study_file", spec.path)
        study.set_user_attr("objective", "val_esr" if len(spec.directions) == 1 else "val_esr, macs_per_sample")
    elif previous != digest:
        logging.getLogger("ampstudy").warning(
            f"study file changed since '{spec.name}' was created; new trials use the new settings")
    return study


def init_tracking_store(tracking_uri: str, experiment: str) -> None:
    """Create the MLflow store and experiment once, under a file lock for a SQLite store: two
    processes migrating a fresh SQLite file at the same moment can fail."""
    db = sqlite_path(tracking_uri)
    if db is not None:
        with file_lock(db.parent / ".ampstudy-init.lock"):
            tracking.ensure_experiment(experiment, tracking_uri)
    else:
        tracking.ensure_experiment(experiment, tracking_uri)


def spec_digest(spec: StudySpec) -> str:
    blob = json.dumps({"options": to_dict(spec.options), "base": to_dict(spec.base),
                       "space": [to_dict(p) for p in spec.space]}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def prepare_data(spec: StudySpec) -> Path:
    """Simulate the dataset once, before any trial, so every trial (and worker) reads the cache."""
    from datamodules.dataset import prepare_dataset

    return Path(prepare_dataset(spec.base.data, progress=True))


def run_study(spec: StudySpec, *, storage_url: str | None = None, n_trials: int | None = None,
              timeout_minutes: float | None = None, workers: int = 1, tracking_uri: str | None = None,
              report: bool = True) -> Any:
    """Run (or resume) the study; returns the Optuna study. See the module docstring."""
    if workers < 1:
        raise AmpStudyError(f"--workers {workers}: must be >= 1")
    n_trials = spec.budget.n_trials if n_trials is None else n_trials
    timeout_minutes = spec.budget.timeout_minutes if timeout_minutes is None else timeout_minutes
    if n_trials < 0 or timeout_minutes < 0 or (n_trials == 0 and timeout_minutes == 0):
        raise AmpStudyError("give a positive --trials and/or --timeout (or budget.n_trials / timeout_minutes)")
    quiet_library_warnings()
    url = storage_for_run(spec, storage_url, workers)
    uri = resolve_tracking_uri(spec, tracking_uri)
    prepare_data(spec)
    study = create_or_load_study(spec, url)
    init_tracking_store(uri, spec.base.experiment)
    parent = mlflow_runs.ensure_parent_run(study, spec.base.experiment, url, uri, spec.options.description)
    plan = RunPlan(spec=spec, storage_url=url, tracking_uri=uri, parent_run_id=parent, n_trials=n_trials,
                   timeout_seconds=timeout_minutes * 60, workers=workers)
    print(f"study '{spec.name}': storage {masked(url)}\n  MLflow parent run {parent} ({masked(uri)})")
    mlflow_runs.set_parent_status(uri, parent, "RUNNING")
    try:
        if workers == 1:
            run_worker(plan, 0)
        else:
            _run_processes(plan)
    finally:
        mlflow_runs.set_parent_status(uri, parent, "FINISHED")
    import optuna

    study = optuna.load_study(study_name=spec.name, storage=open_storage(url))  # fresh view of all workers' trials
    if report:
        from studies.report import report_study

        report_study(study, spec, uri, parent)
    return study


def _run_processes(plan: RunPlan) -> None:
    context = multiprocessing.get_context("spawn")  # fork + torch threads/MLflow clients is unsafe
    processes = [context.Process(target=run_worker, args=(plan, i), name=f"study-worker-{i}")
                 for i in range(plan.workers)]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            process.join(timeout=30)  # they got the SIGINT too and close their trials
            if process.is_alive():
                process.terminate()
        raise
    failed = [p.name for p in processes if p.exitcode != 0]
    if failed:
        raise AmpStudyError(f"worker process(es) {', '.join(failed)} exited with an error (see above); "
                            "run the same command again to resume the study")


def run_worker(plan: RunPlan, worker_index: int) -> None:
    """One worker: optimise until the shared budget is used up or the timeout passes."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO)
    quiet_library_warnings()
    _limit_threads(plan)
    spec, storage_cfg = plan.spec, plan.spec.options.storage
    on_stale = StaleTrialHandler(plan)
    storage = open_storage(plan.storage_url, heartbeat_seconds=storage_cfg.heartbeat_seconds,
                           grace_seconds=storage_cfg.grace_seconds, on_stale=on_stale)
    study = optuna.load_study(study_name=spec.name, storage=storage, sampler=make_sampler(spec, worker_index),
                              pruner=make_pruner(spec))

    def recover(s: Any) -> None:
        fail_dead_local_trials(s, storage_cfg.grace_seconds, on_stale)

    recover(study)
    if plan.n_trials and remaining_trials(study, plan.n_trials) <= 0:
        print(f"worker {worker_index}: the study already has its {plan.n_trials} trials")
        return
    objective = TrialObjective(spec, plan.parent_run_id, plan.tracking_uri, plan.n_trials)
    study.optimize(objective, n_trials=None, timeout=plan.timeout_seconds or None, catch=(Exception,),
                   callbacks=[BudgetCallback(plan.n_trials, recover)], gc_after_trial=True)


def quiet_library_warnings() -> None:
    """Hide warnings that say nothing actionable about a study (they repeat once per trial)."""
    import warnings

    from optuna.exceptions import ExperimentalWarning

    warnings.filterwarnings("ignore", category=ExperimentalWarning)
    for pattern in (".*log_every_n_steps.*", ".*LeafSpec.*", ".*divide by zero encountered in log10.*",
                    ".*PedAnovaImportanceEvaluator computes.*", ".*have less than 2 trials.*"):
        warnings.filterwarnings("ignore", message=pattern)


def _limit_threads(plan: RunPlan) -> None:
    """N workers on one machine share its cores instead of each grabbing all of them."""
    if plan.workers > 1 and plan.spec.base.train.threads == 0:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // plan.workers))
