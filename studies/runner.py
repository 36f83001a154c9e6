"""`ampstudy study run`: create or resume a study and run its trials in one or more processes.

Order of work: validate the study file (already done by load_study_spec) and the budget, open the
storage and create or load the study, checking its fingerprint (an edited search space or base
config stops here, before any work, unless --allow-changed-space), simulate the dataset once
(trials share the cache), create the MLflow parent run once, take a run number (seeds the
sampler streams), then run workers (studies/worker_loop.py): in this process for --workers 1,
else N spawned processes on a journal file (or the given SQL storage), which die with this
process and get its SIGTERM/SIGINT; on a machine with GPUs each gets its own (studies/gpus.py). Finally log the report to the parent run and print a summary.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
from pathlib import Path
from typing import Any

from foundation.errors import AmpStudyError, ConfigError, StopRequested
from foundation.uris import masked
from studies import mlflow_runs, runs_view
from studies.fingerprint import FINGERPRINT_ATTR, adopt_fingerprint
from studies.gpus import VISIBLE, assign_gpus, child_environment, visible_gpus
from studies.gpus import describe as describe_gpus
from studies.recovery import fail_orphaned_trials
from studies.spec import StudySpec, base_params
from studies.stopping import forward_signals, worker_entry
from studies.storage import (
    DEFAULT_JOURNAL,
    DEFAULT_SQLITE,
    absolute_url,
    check_storage_url,
    local_file,
    open_storage,
    storage_lock,
    study_names,
)
from studies.worker_loop import (
    RunPlan,
    close_parent_if_last,
    open_study,
    quiet_library_warnings,
    run_worker,
    workers_lock,
)
from studies.workers import next_run_number
from training import tracking


OBJECTIVE_NAMES = ["val_esr_tail_aware", "macs_per_sample"]  # Optuna metric names (training/evaluate.py PRIMARY)


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


def create_or_load_study(spec: StudySpec, storage_url: str, allow_changed_space: bool = False) -> Any:
    """The study, created if new; on a resume its fingerprint must match the file's (or be allowed
    to change: studies/fingerprint.py)."""
    import optuna

    # Under a lock: processes starting together on a fresh database would race to create its tables.
    with storage_lock(storage_url, "optuna-create-study"):
        storage = open_storage(storage_url)
        study = optuna.create_study(storage=storage, study_name=spec.name, directions=spec.directions,
                                    load_if_exists=True)
        if len(study.directions) != len(spec.directions):
            raise AmpStudyError(f"study '{spec.name}' in {masked(storage_url)} has {len(study.directions)} "
                                f"objective(s) but the file now asks for {len(spec.directions)}; "
                                "rename the study (name = ...)")
        adopt_fingerprint(study, spec, allow_changed_space)
        if spec.options.first_trial_from_base and not study.get_trials(deepcopy=False):
            study.enqueue_trial(base_params(spec))  # a known-good configuration runs first
        if study.metric_names is None:  # optuna-dashboard and study.trials_dataframe() name the objectives
            study.set_metric_names(OBJECTIVE_NAMES[:len(spec.directions)])
        if "study_file" not in study.user_attrs:
            study.set_user_attr("study_file", spec.path)
            study.set_user_attr("objective", ", ".join(OBJECTIVE_NAMES[:len(spec.directions)]))
    return study


def prepare_data(spec: StudySpec) -> Path:
    """Simulate the dataset once, before any trial, so every trial (and worker) reads the cache."""
    from datamodules.dataset import prepare_dataset

    return Path(prepare_dataset(spec.base.data, progress=True))


def check_budget(spec: StudySpec, n_trials: int, timeout_minutes: float, workers: int) -> None:
    if n_trials < 0 or timeout_minutes < 0 or (n_trials == 0 and timeout_minutes == 0 and
                                                not spec.budget.total_samples):
        raise AmpStudyError("give a positive --trials and/or --timeout (or budget.n_trials / timeout_minutes / "
                            "total_samples)")
    if not spec.space and n_trials != 1:
        raise AmpStudyError(f"{spec.path or spec.name}: the study has no [space], so every trial would train the "
                            "same configuration; add [space.model] / [space.train] ranges, or run it once with "
                            "--trials 1 (or use `ampstudy train`)")
    if workers < 1:
        raise AmpStudyError(f"--workers {workers}: must be >= 1")


def worker_gpus(spec: StudySpec, workers: int, share_gpus: bool = False) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES per spawned worker (studies/gpus.py); None everywhere for one worker or a CPU
    study. A study that asks for a GPU this machine lacks stops here, before any work."""
    if spec.base.train.accelerator == "cpu":
        return [None] * workers
    from training.devices import placement

    try:
        placement(spec.base.train)
    except ConfigError as err:
        raise ConfigError(f"{spec.path or spec.name}: base.{err}") from None
    return [None] if workers == 1 else assign_gpus(workers, visible_gpus(), share_gpus)


def run_study(spec: StudySpec, *, storage_url: str | None = None, n_trials: int | None = None,
              timeout_minutes: float | None = None, workers: int = 1, tracking_uri: str | None = None,
              report: bool = True, allow_changed_space: bool = False, share_gpus: bool = False) -> Any:
    """Run (or resume) the study; returns the Optuna study. See the module docstring."""
    n_trials = spec.budget.n_trials if n_trials is None else n_trials
    timeout_minutes = spec.budget.timeout_minutes if timeout_minutes is None else timeout_minutes
    check_budget(spec, n_trials, timeout_minutes, workers)
    gpus = worker_gpus(spec, workers, share_gpus)
    quiet_library_warnings()
    url = storage_for_run(spec, storage_url, workers)
    uri = resolve_tracking_uri(spec, tracking_uri)
    study = create_or_load_study(spec, url, allow_changed_space)
    prepare_data(spec)
    experiment = tracking.ensure_experiment(spec.base.experiment, uri)  # created under a lock (tracking.client)
    parent = mlflow_runs.ensure_parent_run(study, spec.base.experiment, url, uri, spec.options.description,
                                           mlflow_runs.study_params(spec))
    runs_view.save_trials_view(uri, experiment, spec.name, OBJECTIVE_NAMES[0])  # the trials table, browsable now
    with workers_lock(url, spec.name):
        run_number = next_run_number(study)
    plan = RunPlan(spec=spec, storage_url=url, tracking_uri=uri, parent_run_id=parent, n_trials=n_trials,
                   timeout_seconds=timeout_minutes * 60, workers=workers, run_number=run_number,
                   fingerprint=study.user_attrs[FINGERPRINT_ATTR])
    print(f"study '{spec.name}': storage {masked(url)}\n  MLflow parent run {parent} ({masked(uri)})\n  trials, best "
          f"first: {tracking.link(runs_view.trials_route(experiment, spec.name), uri)}", flush=True)
    if describe_gpus(gpus):
        print(f"  {describe_gpus(gpus)}", flush=True)
    if workers == 1:
        run_worker(plan, 0)
    else:
        _run_processes(plan, gpus)
    import optuna

    study = optuna.load_study(study_name=spec.name, storage=open_storage(url))  # fresh view of all workers' trials
    if report:
        from studies.report import report_study

        report_study(study, spec, uri, parent)
    return study


def _run_processes(plan: RunPlan, gpus: list[str | None]) -> None:
    context = multiprocessing.get_context("spawn")  # fork + torch threads/MLflow clients is unsafe
    pids: list[int] = []
    with forward_signals(pids) as received:  # installed first: a signal during start-up is forwarded too
        payload = pickle.dumps(plan)  # unpickled by the worker once it dies with us (worker_entry)
        processes = [context.Process(target=worker_entry, args=(os.getpid(), i, payload), name=f"study-worker-{i}")
                     for i in range(plan.workers)]
        for process, gpu in zip(processes, gpus):
            with child_environment(VISIBLE, gpu):  # read by CUDA in the worker, before it imports torch
                process.start()
            pids.append(process.pid)
        for process in processes:
            process.join()
    _clean_up_after_workers(plan, "KILLED" if received else "FINISHED")
    if received:
        raise StopRequested(received[0], "stopped: the workers failed and re-queued their running trials; "
                                         "run the same command to resume the study")
    failed = [f"{p.name} (exit code {p.exitcode})" for p in processes if p.exitcode != 0]
    if failed:
        raise AmpStudyError(f"worker process(es) {', '.join(failed)} ended early (see above); "
                            "run the same command to resume the study")


def _clean_up_after_workers(plan: RunPlan, status: str) -> None:
    """A worker killed outright (OOM killer, SIGKILL) cannot clean up: fail and re-queue its trial
    now that its pid is gone, and close the parent run if no worker is left anywhere."""
    try:
        study, recovery = open_study(plan)
        fail_orphaned_trials(study, plan.spec.options.storage.grace_seconds, recovery)
        with workers_lock(plan.storage_url, plan.spec.name):
            parent = tracking.client(plan.tracking_uri).get_run(plan.parent_run_id)
            if parent.info.status == "RUNNING":
                close_parent_if_last(plan, study, "", status)
    except Exception as err:
        logging.getLogger("ampstudy").warning(f"could not check the study after its workers ended: {err}")
