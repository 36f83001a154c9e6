"""Studies survive dead workers on other hosts, stop signals, resumes and edited study files:
nothing stays RUNNING, no parameter set is trained twice, no trials of different settings mix.

Sampler-only studies use `max_macs_per_sample = 1`: every trial is infeasible, so it is decided
(PRUNED) from the architecture without training, and a study of many trials takes a second."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
import time

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import TrialState

from ampstudy.cli import main
from foundation.errors import AmpStudyError
from studies import mlflow_runs
from studies.budget import DUPLICATE_ATTR, counted_trials
from studies.fingerprint import (
    FINGERPRINT_ATTR,
    HISTORY_ATTR,
    adopt_fingerprint,
    fingerprint_of,
)
from studies.mlflow_runs import PARENT_RUN_ATTR, STATE_TAG
from studies.promote import pick_trial
from studies.recovery import WORKER_ATTR, fail_orphaned_trials, orphaned_trials
from studies.runner import check_budget, run_study
from studies.spec import load_study_spec
from studies.storage import open_storage, sqlalchemy_url
from studies.workers import RUNS_ATTR, WORKER_PREFIX, WorkerPresence, host_name, registered_workers
from tests.conftest import freeze, start_study_run, wait_for, write_study_file
from tests.test_study_run import runs_by_trial, training_trial
from training import tracking

QUICK_STORAGE = "\n[storage]\nheartbeat_seconds = 1\ngrace_seconds = 2\n"
INFEASIBLE = {'metric = "val_esr_tail_aware"': 'metric = "val_esr_tail_aware"\nmax_macs_per_sample = 1'}
# Trials that are still fitting when a test signals them (a stop waits for the next training step),
# ended by the test long before their epochs run out.
LONG_TRIALS = {"max_epochs = 2": "max_epochs = 2000", "early_stopping_patience = 2": "early_stopping_patience = 2000",
               '[pruner]\nkind = "median"': '[pruner]\nkind = "none"'}


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory):
    """One working directory (one MLflow store: creating it takes seconds) for the sampler-only studies."""
    return tmp_path_factory.mktemp("sampler-studies")


@pytest.fixture
def in_shared_dir(shared_dir, monkeypatch):
    monkeypatch.chdir(shared_dir)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return shared_dir


def register(study, worker: str, beat_age: float, ended: bool = False) -> None:
    """A worker entry as another machine's worker would have written it, last beat `beat_age` s ago."""
    entry = {"started": time.time() - 3600, "beat": time.time() - beat_age, "ended": ended}
    study._storage.set_study_system_attr(study._study_id, WORKER_PREFIX + worker, entry)


def remote_running_trial(study, worker: str, parent_run_id: str) -> int:
    """A RUNNING trial of `worker` with a RUNNING MLflow run, as if it died in train()."""
    trial = study.ask({"train.learning_rate": FloatDistribution(2e-3, 3e-2, log=True)})
    trial.set_user_attr(WORKER_ATTR, worker)
    client = tracking.client(tracking.default_tracking_uri())
    experiment = client.get_run(parent_run_id).info.experiment_id
    client.create_run(experiment, tags={**mlflow_runs.trial_tags(study.study_name, trial.number),
                                        "mlflow.parentRunId": parent_run_id})
    return trial.number


def parent_status(study) -> str:
    return tracking.client(tracking.default_tracking_uri()).get_run(study.user_attrs[PARENT_RUN_ATTR]).info.status


def test_remote_workers_dead_on_the_last_trials_are_failed_and_retried(in_shared_dir, study_data_dir):
    """Issue 10 #1: a worker on another host dies during the last budgeted trials. One was silent long
    before the restart (failed at start-up, before the budget check), the other dies just as the study
    is resumed (its heartbeat is still fresh: the worker waits for it before exiting)."""
    path = write_study_file(in_shared_dir / "remote.toml", study_data_dir, name="remote", n_trials=1,
                            extra=QUICK_STORAGE, replace=INFEASIBLE)  # nothing trains: recovery is what is tested
    spec = load_study_spec(path)
    study = run_study(spec, report=False)
    parent = study.user_attrs[PARENT_RUN_ATTR]
    register(study, "other-host:4242", beat_age=600)
    register(study, "other-host:4243", beat_age=0)
    stale = remote_running_trial(study, "other-host:4242", parent)
    fresh = remote_running_trial(study, "other-host:4243", parent)

    study = run_study(spec, n_trials=3, report=False)
    trials = study.get_trials()
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    assert [t.state for t in counted_trials(trials)] == [TrialState.PRUNED] * 3  # infeasible: decided, not trained
    for number in (stale, fresh):
        assert trials[number].state == TrialState.FAIL
        retry = next(t for t in trials if t.system_attrs.get("failed_trial") == number)
        assert trials[number].params.items() <= retry.params.items() and retry.state == TrialState.PRUNED
        run = runs_by_trial(study)[number][0]
        assert run.info.status == "FAILED" and run.data.tags[STATE_TAG] == "FAIL"
        assert "no heartbeat from worker other-host:424" in run.data.tags["error"]
    assert parent_status(study) == "FINISHED"

    # Two separately started workers: the parent run stays open until the last one leaves.
    other = WorkerPresence(study, heartbeat_seconds=1, worker="third-host:7")
    other.start()
    try:
        run_study(spec, n_trials=3, report=False)  # nothing left to do: joins and leaves
        assert parent_status(study) == "RUNNING"
    finally:
        other.end()
    run_study(spec, n_trials=3, report=False)
    assert parent_status(study) == "FINISHED"


@pytest.mark.parametrize("kind", ["journal", "sqlite", "postgres"])
def test_orphaned_trials_are_found_on_every_storage(kind, tmp_path, request):
    if kind == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"journal:{tmp_path / 'j.log'}" if kind == "journal" else f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(storage=open_storage(url, heartbeat_seconds=1, grace_seconds=2),
                                study_name=f"orphans-{kind}-{os.getpid()}-{time.time_ns()}")
    dist = {"x": FloatDistribution(0, 1)}
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    workers = {"silent": "far-host:1", "alive": "far-host:2", "ended": "far-host:3", "unknown": "far-host:4",
               "local dead": f"{host_name()}:{dead.pid}"}
    register(study, workers["silent"], beat_age=60)
    register(study, workers["local dead"], beat_age=60)
    register(study, workers["alive"], beat_age=0)
    register(study, workers["ended"], beat_age=0, ended=True)
    numbers = {}
    for name, worker in workers.items():
        trial = study.ask(dist)
        trial.set_user_attr(WORKER_ATTR, worker)
        numbers[name] = trial.number
    found = {t.number: reason for t, reason in orphaned_trials(study, grace_seconds=2)}
    assert set(found) == {numbers["silent"], numbers["ended"], numbers["local dead"]}
    assert "no heartbeat from worker far-host:1" in found[numbers["silent"]]
    # Issue 22 #11: a dead local worker's reason said "no heartbeat for 60 s"; its process tells more.
    assert f"process {dead.pid} on this host no longer exists" in found[numbers["local dead"]]
    # A worker that never registered (another version): on SQL storages Optuna's trial heartbeat tells.
    # Optuna 5's JournalStorage has no heartbeat at all, so there only the worker entries can tell.
    storage = study._storage
    assert isinstance(storage, BaseHeartbeat) == (kind != "journal")
    if kind != "journal":
        import sqlalchemy

        trial_id = study.get_trials()[numbers["unknown"]]._trial_id
        storage.record_heartbeat(trial_id)
        old = "now() - interval '1 hour'" if kind == "postgres" else "datetime('now', '-1 hour')"
        engine = sqlalchemy.create_engine(sqlalchemy_url(url))
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f"UPDATE trial_heartbeats SET heartbeat = {old} WHERE trial_id = {trial_id}"))
        engine.dispose()
    seen = []
    fail_orphaned_trials(study, 2, lambda s, t, why: seen.append(t.number))
    states = {t.number: t.state for t in study.get_trials()}
    expected_failed = {numbers["silent"], numbers["ended"], numbers["local dead"]} | (
        {numbers["unknown"]} if kind != "journal" else set())
    assert {n for n, s in states.items() if s == TrialState.FAIL} == expected_failed
    assert states[numbers["alive"]] == TrialState.RUNNING
    assert set(seen) == {numbers["silent"], numbers["ended"], numbers["local dead"]}  # Optuna's own check calls
    # the storage's handler


def sampler_only_study(workdir, data_dir, name: str, n_trials: int, space: str | None = None,
                       replace: dict[str, str] | None = None):
    path = write_study_file(workdir / f"{name}.toml", data_dir, name=name, n_trials=n_trials,
                            replace={**INFEASIBLE, **(replace or {})})
    if space is not None:
        text = path.read_text()
        path.write_text(text[:text.index("[space.model]")] + space)
    return load_study_spec(path)


def test_resumes_and_separate_workers_sample_distinct_start_up_trials(in_shared_dir, study_data_dir):
    """Issue 10 #2: every `study run` (a resume, or a worker started on another machine) used the
    sampler seed unchanged and replayed the same random start-up trials."""
    spec = sampler_only_study(in_shared_dir, study_data_dir, "seeds", n_trials=2)
    run_study(spec, report=False)
    study = run_study(spec, n_trials=4, report=False)
    params = [tuple(sorted(t.params.items())) for t in study.get_trials()]
    assert len(params) == 4 and len(set(params)) == 4
    assert study._storage.get_study_system_attrs(study._study_id)[RUNS_ATTR] == 2


def test_no_parameter_set_is_tried_twice(in_shared_dir, study_data_dir):
    """Two points in the space: the third proposal can only repeat one, so it is never run; the study
    ends with its two distinct trials instead of using its budget on copies."""
    space = "[space.model]\nchannels = { choices = [2, 4] }\n"
    spec = sampler_only_study(in_shared_dir, study_data_dir, "dups", n_trials=4, space=space,
                              replace={'kind = "tpe"': 'kind = "random"'})
    study = run_study(spec, report=False)
    counted = counted_trials(study.get_trials())
    assert sorted(t.params["model.channels"] for t in counted) == [2, 4]
    duplicates = [t for t in study.get_trials() if DUPLICATE_ATTR in t.user_attrs]
    assert duplicates and all(t.state == TrialState.FAIL for t in duplicates)
    assert set(runs_by_trial(study)) == {t.number for t in counted}  # copies get no MLflow run


def test_empty_space_is_refused_unless_one_trial(in_shared_dir, study_data_dir):
    spec = sampler_only_study(in_shared_dir, study_data_dir, "empty", n_trials=3, space="")
    with pytest.raises(AmpStudyError, match=r"has no \[space\].*--trials 1"):
        run_study(spec, report=False)
    check_budget(spec, n_trials=1, timeout_minutes=0, workers=1)  # one run of the base config is fine


def test_resume_with_edited_study_file_is_refused_or_continued_on_purpose(in_shared_dir, study_data_dir, capsys):
    """Issue 10 #3: an edited space or base config only warned, then mixed trials (or failed every
    new trial for changed choices, with exit code 0)."""
    spec = sampler_only_study(in_shared_dir, study_data_dir, "edited", n_trials=2)
    path = spec.path
    first = run_study(spec, report=False).user_attrs[FINGERPRINT_ATTR]
    capsys.readouterr()
    original = open(path).read()

    def edit(old, new):
        text = original
        for a, b in zip(old, new):
            assert a in text
            text = text.replace(a, b, 1)
        with open(path, "w") as handle:
            handle.write(text)

    edit(["max_epochs = 2", "channels = { choices = [2, 4, 6] }"],
         ["max_epochs = 3", "channels = { choices = [2, 4] }"])
    assert main(["study", "run", path, "--trials", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "base.train.max_epochs, space.model.channels" in err
    assert "new name" in err and "--allow-changed-space" in err
    assert main(["study", "run", path, "--trials", "3", "--allow-changed-space"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "space.model.channels" in err and "Optuna cannot" in err

    edit(["max_epochs = 2", "learning_rate = { low = 2e-3, high = 3e-2"],
         ["max_epochs = 3", "learning_rate = { low = 1e-3, high = 3e-2"])
    assert main(["study", "run", path, "--trials", "3", "--allow-changed-space"]) == 0
    study = optuna.load_study(study_name="edited", storage=open_storage(f"sqlite:///{in_shared_dir}/mlruns/optuna.db"))
    second = study.user_attrs[FINGERPRINT_ATTR]
    assert second != first and [h["hash"] for h in study.user_attrs[HISTORY_ATTR]] == [first, second]
    tags = [t.user_attrs[FINGERPRINT_ATTR] for t in study.get_trials()]
    assert tags == [first, first, second]
    runs = runs_by_trial(study)
    assert [runs[n][0].data.tags[mlflow_runs.FINGERPRINT_TAG] for n in range(3)] == tags
    assert main(["study", "run", path, "--trials", "3"]) == 0  # the same file again: no flag needed


def test_a_study_run_under_another_esr_definition_is_not_resumed_silently(tmp_path):
    """val_esr changed meaning (pooled -> typical setting): a study whose trials were scored the old
    way must not take new trials scored the new way without saying so."""
    spec = load_study_spec("studies/tiny.toml")
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path}/optuna.db"), study_name="old")
    adopt_fingerprint(study, spec)
    old_fields = {k: v for k, v in study.user_attrs[HISTORY_ATTR][0]["fields"].items() if "esr_definition" not in k}
    study.set_user_attr(HISTORY_ATTR, [{"hash": fingerprint_of(old_fields), "fields": old_fields}])
    with pytest.raises(AmpStudyError, match=r"changed: objective\.esr_definition\)"):
        adopt_fingerprint(study, spec)


def test_promote_compares_trials_of_one_fingerprint(tmp_path):
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'o.db'}"), study_name="fp")
    study.set_user_attr(HISTORY_ATTR, [{"hash": "aaa", "fields": {}}, {"hash": "bbb", "fields": {}}])
    dist = {"x": FloatDistribution(0, 1)}
    for value, fingerprint in ((0.1, None), (0.2, "bbb"), (0.3, "bbb")):
        attrs = {mlflow_runs.RUN_ID_ATTR: f"run{value}"} | ({FINGERPRINT_ATTR: fingerprint} if fingerprint else {})
        study.add_trial(optuna.trial.create_trial(params={"x": value}, distributions=dist, value=value,
                                                  user_attrs=attrs))
    assert pick_trial(study, None, None, fingerprint="bbb").number == 1  # trial 0 ran under "aaa"
    assert pick_trial(study, None, None, fingerprint="aaa").number == 0
    assert pick_trial(study, None, None).number == 0  # --all-fingerprints
    with pytest.raises(AmpStudyError, match="fingerprint ccc.*--all-fingerprints"):
        pick_trial(study, None, None, fingerprint="ccc")


def test_sigterm_mid_trial_leaves_nothing_running(in_shared_dir, study_data_dir):
    """Issue 10 #4: SIGTERM (timeout, systemd, schedulers) left the trial and the parent run RUNNING."""
    path = write_study_file(in_shared_dir / "term.toml", study_data_dir, name="term", n_trials=2, replace=LONG_TRIALS)
    worker = start_study_run(path, "term")
    log_path = path.with_suffix(".log")
    url = f"sqlite:///{in_shared_dir / 'mlruns' / 'optuna.db'}"
    stopped = wait_for(lambda: training_trial("term", url, worker), timeout=240, interval=0.1,
                       what="a trial in training").number
    os.kill(worker.pid, signal.SIGTERM)
    os.kill(worker.pid, signal.SIGCONT)
    assert worker.wait(60) == 128 + signal.SIGTERM, log_path.read_text()[-3000:]
    assert f"trial {stopped} was failed and re-queued" in log_path.read_text()
    study = optuna.load_study(study_name="term", storage=open_storage(url))
    trials = study.get_trials()
    assert trials[stopped].state == TrialState.FAIL and "SIGTERM" in trials[stopped].user_attrs["error"]
    # Issue 22 #6: the stop waits for a safe point (it had landed inside an MLflow SQL call) and is
    # recorded as a stop, not as an exception with a traceback.
    assert "at a safe point" in trials[stopped].user_attrs["error"], trials[stopped].user_attrs["error"]
    assert "Exception" not in trials[stopped].user_attrs["error"]
    assert [t.system_attrs.get("failed_trial") for t in trials if t.state == TrialState.WAITING] == [stopped]
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    runs = runs_by_trial(study)
    assert runs[stopped][0].info.status == "KILLED" and "SIGTERM" in runs[stopped][0].data.tags["error"]
    assert "at a safe point" in runs[stopped][0].data.tags["error"] and "traceback" not in runs[stopped][0].data.tags
    assert all(r.info.status != "RUNNING" for rs in runs.values() for r in rs)
    assert parent_status(study) == "KILLED"


def test_deleting_the_experiment_mid_study_burns_no_budget(in_shared_dir, study_data_dir):
    """Issue 22 #2: the trial in training failed and was not re-queued, every remaining trial failed
    within a second, then a traceback from the report; a resume had no budget left."""
    path = write_study_file(in_shared_dir / "gone.toml", study_data_dir, name="gone", n_trials=1,
                            replace={"max_epochs = 2": "max_epochs = 40",
                                     '[pruner]\nkind = "median"': '[pruner]\nkind = "none"'})
    worker = start_study_run(path, "gone")
    url = f"sqlite:///{in_shared_dir / 'mlruns' / 'optuna.db'}"
    caught = wait_for(lambda: training_trial("gone", url, worker), timeout=240, interval=0.1,
                      what="a trial in training").number
    # Thawed at once: frozen, the worker may hold the tracking store's SQLite lock, and then even a read
    # fails (CI: "database is locked" in get_run). 40 epochs keep the caught trial in training long after.
    os.kill(worker.pid, signal.SIGCONT)
    study = optuna.load_study(study_name="gone", storage=open_storage(url))
    client = tracking.client(tracking.default_tracking_uri())
    experiment_id = client.get_run(study.user_attrs[PARENT_RUN_ATTR]).info.experiment_id
    client.delete_experiment(experiment_id)  # as from the UI
    log_path = path.with_suffix(".log")
    assert worker.wait(120) == 2, log_path.read_text()[-3000:]
    last = log_path.read_text().strip().splitlines()[-1]
    assert "was deleted; restore it" in last and f"--experiment-id {experiment_id}" in last, last
    assert "Traceback" not in log_path.read_text()
    trials = optuna.load_study(study_name="gone", storage=open_storage(url)).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]  # nothing else started
    assert trials[1].system_attrs["failed_trial"] == caught == 0
    client.restore_experiment(experiment_id)  # the fix the line names; then the same command resumes
    assert main(["study", "run", str(path)]) == 0
    trials = optuna.load_study(study_name="gone", storage=open_storage(url)).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]  # the retry was the budget


def test_killing_the_parent_of_workers_stops_them_gracefully(in_shared_dir, study_data_dir):
    """Issue 10 #4: killing the parent of --workers 2 left its workers running (and training)."""
    path = write_study_file(in_shared_dir / "orphans.toml", study_data_dir, name="orphans", n_trials=4,
                            replace=LONG_TRIALS)
    parent = start_study_run(path, "orphans", "--workers", "2")
    url = f"journal:{in_shared_dir / 'mlruns' / 'optuna-journal.log'}"

    def workers_frozen_in_training():
        study = optuna.load_study(study_name="orphans", storage=open_storage(url))
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        pids = [int(w.rpartition(":")[2]) for w in registered_workers(study)]
        if len(pids) < 2 or not running or not runs_by_trial(study).get(running[0].number):
            return None
        for pid in pids:
            freeze(pid)
        still = [t.number for t in optuna.load_study(study_name="orphans", storage=open_storage(url)).get_trials()
                 if t.state == TrialState.RUNNING]
        if still:
            return pids, still
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        return None

    pids, interrupted = wait_for(workers_frozen_in_training, timeout=240, interval=0.2, what="workers in training")
    parent.kill()  # SIGKILL: it cannot forward anything; the kernel sends the workers SIGTERM
    parent.wait(30)
    for pid in pids:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: all(_gone(pid) for pid in pids), timeout=60, what="the workers to end")
    study = optuna.load_study(study_name="orphans", storage=open_storage(url))
    trials = study.get_trials()
    # Each interrupted trial stopped at a safe point, or (frozen after its last one, while logging) finished.
    assert all(trials[n].state == TrialState.COMPLETE
               or (trials[n].state == TrialState.FAIL and "SIGTERM" in trials[n].user_attrs["error"])
               for n in interrupted), [(trials[n].state, trials[n].user_attrs.get("error")) for n in interrupted]
    assert any(trials[n].state == TrialState.FAIL for n in interrupted)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert all(r.info.status != "RUNNING" for rs in runs_by_trial(study).values() for r in rs)
    assert parent_status(study) == "KILLED"


def _spawned_workers(parent: int) -> list[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(pid) for pid in children
            if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()]


def test_workers_end_at_once_when_their_parent_is_killed_during_start_up(in_shared_dir, study_data_dir):
    """Issue 22 #11: workers of a parent killed while they started ran on for ~40 s (they asked for
    the parent's death signal only after importing torch, Lightning and MLflow)."""
    path = write_study_file(in_shared_dir / "startup.toml", study_data_dir, name="startup", n_trials=2)
    parent = start_study_run(path, "startup", "--workers", "2")
    pids = wait_for(lambda: len(_spawned_workers(parent.pid)) == 2 and _spawned_workers(parent.pid), timeout=60,
                    interval=0.02, what="two worker processes")
    time.sleep(0.5)  # started, still importing (that alone takes seconds)
    parent.kill()
    parent.wait(30)
    killed = time.monotonic()
    wait_for(lambda: all(_gone(pid) for pid in pids), timeout=60, interval=0.05, what="the workers to end")
    assert time.monotonic() - killed < 3.0


def _gone(pid: int) -> bool:
    """Ended (a zombie waits for its dead parent's reaper: it no longer runs)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in "ZX"
    except OSError:
        return True
