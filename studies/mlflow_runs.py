"""The MLflow side of a study: one parent run per study, one nested run per trial.

`train()` creates each trial's run (tagged `optuna.study` / `optuna.trial`); this module creates
the parent run exactly once across racing workers, finds a trial's run by its tags, and closes or
stubs runs for trials that died before or while training, so every trial has exactly one run.
"""

from __future__ import annotations

from typing import Any

from mlflow.entities import Param
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from foundation.configs import flatten, to_dict
from foundation.errors import AmpStudyError

from studies.storage import storage_lock
from training import tracking

PARENT_RUN_ATTR = "mlflow_parent_run_id"  # study user attr
RUN_ID_ATTR = "mlflow_run_id"  # trial user attr
STUDY_TAG = "optuna.study"
TRIAL_TAG = "optuna.trial"
STATE_TAG = "optuna.state"
ROLE_TAG = "ampstudy.role"
FINGERPRINT_TAG = "ampstudy.fingerprint"
OUTCOME_SUFFIX = {"PRUNED": "(pruned)", "FAIL": "(failed)"}  # appended to a trial run's name


def trial_run_name(study_name: str, trial_number: int) -> str:
    return f"{study_name}-t{trial_number:03d}"


def trial_tags(study_name: str, trial_number: int, fingerprint: str = "") -> dict[str, str]:
    tags = {STUDY_TAG: study_name, TRIAL_TAG: str(trial_number), ROLE_TAG: "trial"}
    if fingerprint:  # the settings the trial ran under (studies/fingerprint.py)
        tags[FINGERPRINT_TAG] = fingerprint
    return tags


def study_params(spec: Any) -> dict[str, str]:
    """The study's settings as the parent run's params: sampler, pruner, budget, objective and
    each searched dimension ("space.model.channels" = "choices [2, 4, 6]")."""
    options = spec.options
    params = {f"{section}.{k}": str(v) for section, table in (
        ("sampler", options.sampler), ("pruner", options.pruner), ("budget", options.budget),
        ("objective", options.objective)) for k, v in flatten(to_dict(table)).items()}
    for param in spec.space:
        d = param.dim
        text = (f"choices {list(d.choices)}" if d.choices else
                f"{param.kind} {d.low:g}..{d.high:g}" + (" log" if d.log else "") + (f" step {d.step:g}" if d.step else ""))
        when = ", ".join(f"{name} in {list(values)}" for name, values in param.when)
        params[f"space.{param.name}"] = text + (f" when {when}" if when else "")
    params["study.name"] = spec.name
    params["base.experiment"] = spec.base.experiment
    return params


def ensure_parent_run(study: Any, experiment: str, storage_url: str, tracking_uri: str,
                      description: str = "", params: dict[str, str] | None = None) -> str:
    """The study's parent run id, created once even when several workers start together; `params`
    (study_params) are logged when it is created.

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
        items = [Param(k, v[:6000]) for k, v in (params or {}).items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per call
            client.log_batch(run.info.run_id, params=items[start:start + 100])
        study.set_user_attr(PARENT_RUN_ATTR, run.info.run_id)
        return run.info.run_id


class TrackingUnavailable(AmpStudyError):
    """A trial ended because the study's runs cannot be written (tracking_problem says why)."""


def tracking_problem(tracking_uri: str, parent_run_id: str) -> str | None:
    """Why the study's runs cannot be written any more (its MLflow experiment or parent run deleted,
    e.g. from the UI, mid-study), with the fix; None when they can. Asked after a trial failed: such a
    failure is the store's, not the trial's, and must not use up the budget."""
    from mlflow.exceptions import MlflowException

    from foundation.uris import masked

    client = tracking.client(tracking_uri)
    where = f"MLFLOW_TRACKING_URI={masked(tracking_uri)}"
    try:
        run = client.get_run(parent_run_id)
    except MlflowException:
        return (f"the study's MLflow parent run {parent_run_id} no longer exists in {masked(tracking_uri)}; "
                "the study's trials cannot be tracked")
    experiment = client.get_experiment(run.info.experiment_id)
    if experiment.lifecycle_stage != "active":
        return (f"the study's MLflow experiment '{experiment.name}' was deleted; restore it "
                f"({where} mlflow experiments restore --experiment-id {experiment.experiment_id}), then run the same "
                "command to resume")
    if run.info.lifecycle_stage != "active":
        return (f"the study's MLflow parent run {parent_run_id} was deleted; restore it ({where} mlflow runs restore "
                f"--run-id {parent_run_id}), then run the same command to resume")
    return None


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
    got to create one (e.g. an invalid architecture). Returns the run id.

    The run's name says how the trial ended when it did not complete ("tiny-t003 (pruned)"), so the
    runs table tells a pruned trial (status FINISHED: it stopped as asked) from a failed one at a glance."""
    client = tracking.client(tracking_uri)
    runs = trial_runs(tracking_uri, parent_run_id, trial_number)
    name = trial_run_name(study_name, trial_number)
    if runs:
        run_id = runs[0].info.run_id
    else:
        tags = {**trial_tags(study_name, trial_number, fingerprint), MLFLOW_PARENT_RUN_ID: parent_run_id}
        run = client.create_run(tracking.ensure_experiment(experiment, tracking_uri), tags=tags, run_name=name)
        run_id = run.info.run_id
        run_status = run_status or ("FINISHED" if state == "PRUNED" else "FAILED")
    client.set_tag(run_id, STATE_TAG, state)
    if state in OUTCOME_SUFFIX:
        client.set_tag(run_id, MLFLOW_RUN_NAME, f"{name} {OUTCOME_SUFFIX[state]}")
    if error:  # why it was pruned, or the exception that failed it
        client.set_tag(run_id, "prune_reason" if state == "PRUNED" else "error", error[:5000])
    if run_status:
        client.set_terminated(run_id, run_status)
    return run_id
