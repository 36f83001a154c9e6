"""Real tiny studies: SQLite, two local workers on a journal file, two processes on PostgreSQL,
a worker killed with SIGKILL mid-trial, and a failing trial. Every trial must end up with exactly
one MLflow run nested under the study's parent run."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys

import optuna
import sqlalchemy.exc
from optuna.trial import TrialState

from studies.budget import EXCESS_ATTR, counted_trials
from studies.mlflow_runs import PARENT_RUN_ATTR, RUN_ID_ATTR, STATE_TAG, TRIAL_TAG, trial_runs
from studies.objective import ERROR_ATTR
from studies.runner import create_or_load_study, find_study_storage, run_study
from studies.spec import load_study_spec
from studies.storage import open_storage
from tests.conftest import POSTGRES_PASSWORD, freeze, start_study_run, wait_for, write_study_file
from training import tracking

# A trial whose training data cannot hold one segment: train() raises a real AmpStudyError.
FAILING_SPACE = "\n[space.train.segment_samples]\nchoices = [1024, 1000000]\n"


def runs_by_trial(study) -> dict[int, list]:
    uri = tracking.default_tracking_uri()
    grouped = collections.defaultdict(list)
    for run in trial_runs(uri, study.user_attrs[PARENT_RUN_ATTR]):
        grouped[int(run.data.tags[TRIAL_TAG])].append(run)
    return grouped


def assert_one_run_per_trial(study, n_trials: int) -> None:
    trials = counted_trials(study.get_trials())
    assert len(trials) == n_trials
    assert all(t.state.is_finished() for t in study.get_trials())
    runs = runs_by_trial(study)
    for trial in study.get_trials():
        if trial.user_attrs.get(EXCESS_ATTR):
            assert trial.number not in runs  # a surplus trial never trained
            continue
        assert len(runs[trial.number]) == 1, f"trial {trial.number} has {len(runs[trial.number])} runs"
        run = runs[trial.number][0]
        assert run.data.tags[STATE_TAG] == trial.state.name
        if RUN_ID_ATTR in trial.user_attrs:
            assert trial.user_attrs[RUN_ID_ATTR] == run.info.run_id
    assert sum(len(v) for v in runs.values()) == len(runs)  # no stray runs for unknown trials


def test_study_on_sqlite_survives_a_failing_trial_and_logs_the_report(study_workdir, study_data_dir):
    spec = load_study_spec(write_study_file(study_workdir / "s.toml", study_data_dir, n_trials=3,
                                            extra=FAILING_SPACE))
    url = f"sqlite:///{study_workdir / 'mlruns' / 'optuna.db'}"
    create_or_load_study(spec, url).enqueue_trial({"train.segment_samples": 1000000})
    study = run_study(spec)
    assert find_study_storage(spec) == url  # the default SQLite storage, found again by report/promote
    failed = study.trials[0]
    assert failed.state == TrialState.FAIL and "segment_samples" in failed.user_attrs[ERROR_ATTR]
    assert {t.state for t in study.trials[1:]} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert_one_run_per_trial(study, 3)
    failed_run = runs_by_trial(study)[0][0]
    assert failed_run.info.status == "FAILED" and "segment_samples" in failed_run.data.tags["error"]
    client = tracking.client(tracking.default_tracking_uri())
    parent = study.user_attrs[PARENT_RUN_ATTR]
    files = {os.path.basename(a.path) for a in client.list_artifacts(parent, "study")}
    assert {"trials.csv", "optimization_history.png", "summary.txt"} <= files
    assert client.get_run(parent).info.status == "FINISHED"
    # Resuming a study whose budget is used up runs nothing and keeps the same parent run.
    again = run_study(spec, report=False)
    assert len(again.trials) == 3 and again.user_attrs[PARENT_RUN_ATTR] == parent


def test_two_local_workers_share_a_journal_study(study_workdir, study_data_dir):
    spec = load_study_spec(write_study_file(study_workdir / "s.toml", study_data_dir, name="journal", n_trials=4))
    study = run_study(spec, workers=2, report=False)
    assert find_study_storage(spec).startswith("journal:")
    assert_one_run_per_trial(study, 4)


def test_two_processes_share_a_postgres_study(study_workdir, study_data_dir, postgres_url):
    path = write_study_file(study_workdir / "s.toml", study_data_dir, name="pg", n_trials=4)
    command = [sys.executable, "-m", "ampstudy.cli", "study", "run", str(path), "--storage", postgres_url]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    assert all("postgres:***@" in out and POSTGRES_PASSWORD not in out for out in outputs)  # printed, masked
    study = optuna.load_study(study_name="pg", storage=open_storage(postgres_url))
    assert_one_run_per_trial(study, 4)
    client = tracking.client(tracking.default_tracking_uri())
    experiment = client.get_experiment_by_name(load_study_spec(path).base.experiment)
    parents = client.search_runs([experiment.experiment_id], "tags.`ampstudy.role` = 'study'")
    assert [p.info.run_id for p in parents] == [study.user_attrs[PARENT_RUN_ATTR]]  # created exactly once


def training_trial(study_name: str, url: str, process, *, after_done: int = 0):
    """A RUNNING trial whose MLflow run exists (it is in train()) once `after_done`
    trials have finished, with `process` frozen (SIGSTOP) so that the trial cannot finish any more;
    None (process running again) otherwise. Call only once the study exists (it printed its storage):
    opening a database that is still being created races its table creation."""
    study = optuna.load_study(study_name=study_name, storage=open_storage(url))
    done = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if len(done) < after_done or not running or PARENT_RUN_ATTR not in study.user_attrs \
            or not runs_by_trial(study).get(running[0].number):
        return None
    freeze(process.pid)
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(url))
        if study.get_trials(deepcopy=False)[running[0].number].state == TrialState.RUNNING:
            return running[0]  # a FrozenTrial, true even for trial 0
    except sqlalchemy.exc.OperationalError:  # frozen inside a write to SQLite: even reads wait on its lock
        pass
    os.kill(process.pid, signal.SIGCONT)  # it finished between the two looks (or held a lock): try again
    return None


def test_killed_worker_trial_is_failed_and_retried_on_restart(study_workdir, study_data_dir):
    path = write_study_file(study_workdir / "s.toml", study_data_dir, name="killed", n_trials=3,
                            replace={"max_epochs = 2": "max_epochs = 8",  # trials long enough to catch one in training
                                     "early_stopping_patience = 2": "early_stopping_patience = 8",
                                     '[pruner]\nkind = "median"': '[pruner]\nkind = "none"'})
    spec = load_study_spec(path)
    worker = start_study_run(path, "killed")
    url = f"sqlite:///{study_workdir / 'mlruns' / 'optuna.db'}"
    killed = wait_for(lambda: training_trial("killed", url, worker, after_done=1), timeout=240, interval=0.1,
                      what="a trial in training").number
    os.kill(worker.pid, signal.SIGKILL)  # frozen mid-training: the trial cannot have finished
    worker.wait(30)
    before = {t.number: (t.state, t.values) for t in optuna.load_study(
        study_name="killed", storage=open_storage(url)).get_trials() if t.state.is_finished()}

    study = run_study(spec, report=False)
    trials = {t.number: t for t in study.get_trials()}
    assert trials[killed].state == TrialState.FAIL
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].params == trials[killed].params and retries[0].state.is_finished()
    assert all((trials[n].state, trials[n].values) == kept for n, kept in before.items())
    assert_one_run_per_trial(study, 3)
    killed_run = runs_by_trial(study)[killed][0]
    assert killed_run.info.status == "FAILED" and "worker died" in killed_run.data.tags["error"]


def test_cli_study_run_and_report(study_workdir, study_data_dir, capsys):
    from ampstudy.cli import main

    path = write_study_file(study_workdir / "s.toml", study_data_dir, name="report", n_trials=1)
    assert main(["study", "report", str(path)]) == 2  # no such study yet: a clear error
    assert "no study named 'report'" in capsys.readouterr().err
    assert main(["study", "run", str(path)]) == 0
    assert main(["study", "report", str(path)]) == 0
    assert "study 'report': 1 trials" in capsys.readouterr().out

