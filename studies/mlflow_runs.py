"""The MLflow side of a study: one parent run per study, one nested run per trial.

`train()` creates each trial's run (tagged `optuna.study` / `optuna.trial`); this module creates
the parent run exactly once across racing workers, finds a trial's run by its tags, and closes or
stubs runs for trials that died before or while training, so every trial has exactly one run.
"""

from __future__ import annotations

from typing import Any

from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from studies.storage import storage_lock
from training import tracking

PARENT_RUN_ATTR = "mlflow_parent_run_id"  # study user attr
RUN_ID_ATTR = "mlflow_run_id"  # trial user attr
STUDY_TAG = "optuna.study"
TRIAL_TAG = "optuna.trial"
STATE_TAG = "optuna.state"
ROLE_TAG = "ampstudy.role"
FINGERPRINT_TAG = "ampstudy.fingerprint"


def trial_tags(study_name: str, trial_number: int, fingerprint: str = "") -> dict[str, str]:
    tags = {STUDY_TAG: study_name, TRIAL_TAG: str(trial_number), ROLE_TAG: "trial"}
    if fingerprint:  # the settings the trial ran under (studies/fingerprint.py)
        tags[FINGERPRINT_TAG] = fingerprint
    return tags


def ensure_parent_run(study: Any, experiment: str, storage_url: str, tracking_uri: str,
                      description: str = "") -> str:
    """The study's parent run id, created once even when several workers start together.

    Creation happens under a lock on the study storage (file lock, or PostgreSQL advisory lock),
    re-reading the study attribute inside it, so exactly one process creates the run.
    """
    run_id = study.user_attrs.get(PARENT_RUN_ATTR)
    if run_id:
        return run_id
    with storage_lock(storage_url, f"{study.study_name}:parent-run"):
        run_id = study.user_attrs.get(PARENT_RUN_ATTR)  # re-read: another process may have won
        if run_id:
            return run_id
        client = tracking.client(tracking_uri)
        experiment_id = tracking.ensure_experiment(experiment, tracking_uri)
        tags = {STUDY_TAG: study.study_name, ROLE_TAG: "study", MLFLOW_RUN_NAME: f"study-{study.study_name}"}
        if description:
            tags["mlflow.note.content"] = description
        run = client.create_run(experiment_id, tags=tags, run_name=f"study-{study.study_name}")
        study.set_user_attr(PARENT_RUN_ATTR, run.info.run_id)
        return run.info.run_id


def set_parent_status(tracking_uri: str, run_id: str, status: str) -> None:
    """RUNNING while some worker works on the study; FINISHED (or KILLED when stopped by a signal,
    FAILED on an error) once the last one left; a resume reopens it."""
    client = tracking.client(tracking_uri)
    if status == "RUNNING":
        client.update_run(run_id, status="RUNNING")
    else:
        client.set_terminated(run_id, status)


def trial_runs(tracking_uri: str, parent_run_id: str, trial_number: int | None = None) -> list[Any]:
    """Child runs of the study's parent run (all, or those of one trial)."""
    client = tracking.client(tracking_uri)
    parent = client.get_run(parent_run_id)
    query = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'"
    if trial_number is not None:
        query += f" and tags.`{TRIAL_TAG}` = '{trial_number}'"
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([parent.info.experiment_id], query, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def record_trial_outcome(tracking_uri: str, parent_run_id: str, study_name: str, trial_number: int,
                         experiment: str, state: str, error: str = "", run_status: str | None = None,
                         fingerprint: str = "") -> str:
    """Tag the trial's run with its Optuna state (and error), creating a stub run if train never
    got to create one (e.g. an invalid architecture). Returns the run id."""
    client = tracking.client(tracking_uri)
    runs = trial_runs(tracking_uri, parent_run_id, trial_number)
    if runs:
        run_id = runs[0].info.run_id
    else:
        tags = {**trial_tags(study_name, trial_number, fingerprint), MLFLOW_PARENT_RUN_ID: parent_run_id}
        run = client.create_run(tracking.ensure_experiment(experiment, tracking_uri), tags=tags,
                                run_name=f"{study_name}-t{trial_number:03d}")
        run_id = run.info.run_id
        run_status = run_status or ("FINISHED" if state == "PRUNED" else "FAILED")
    client.set_tag(run_id, STATE_TAG, state)
    if error:  # why it was pruned, or the exception that failed it
        client.set_tag(run_id, "prune_reason" if state == "PRUNED" else "error", error[:5000])
    if run_status:
        client.set_terminated(run_id, run_status)
    return run_id
