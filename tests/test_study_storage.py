"""Storage plumbing without training: the shared budget, dead-worker recovery, cross-process locks."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from foundation.errors import ConfigError
from foundation.files import file_lock
from studies.budget import EXCESS_ATTR, counted_trials, is_excess, remaining_trials
from studies.recovery import RETRY_ATTR, WORKER_ATTR, fail_orphaned_trials, requeue_trial
from studies.storage import check_storage_url, open_storage, storage_lock
from studies.workers import worker_id


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture(params=["journal", "sqlite"])
def study(request, tmp_path):
    url = f"journal:{tmp_path / 'j.log'}" if request.param == "journal" else f"sqlite:///{tmp_path / 'o.db'}"
    return optuna.create_study(storage=open_storage(url), study_name="s")


def _finish(study, value=1.0):
    trial = study.ask()
    trial.set_user_attr(WORKER_ATTR, worker_id())
    study.tell(trial, value)


def test_dead_local_worker_trial_is_failed_once_and_requeued(study):
    _finish(study)
    orphan = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    orphan.set_user_attr(WORKER_ATTR, f"{worker_id().rpartition(':')[0]}:{_dead_pid()}")
    alive = study.ask()
    alive.set_user_attr(WORKER_ATTR, worker_id())  # this process: alive, must not be touched
    seen = []
    assert fail_orphaned_trials(study, 60, lambda s, t, why: seen.append(t) or requeue_trial(s, t, 2)) == 1
    assert fail_orphaned_trials(study, 60, lambda s, t, why: seen.append(t)) == 0  # idempotent
    states = {t.number: t.state for t in study.get_trials()}
    assert states[orphan.number] == TrialState.FAIL and states[alive.number] == TrialState.RUNNING
    assert [t.number for t in seen] == [orphan.number]
    retry = study.get_trials(states=(TrialState.WAITING,))[0]
    assert retry.params == orphan.params and retry.system_attrs[RETRY_ATTR] == [orphan.number]


def test_requeue_stops_after_max_retries(study):
    trial = study.ask()
    study.tell(trial, state=TrialState.FAIL)
    frozen = study.get_trials()[0]
    frozen.system_attrs[RETRY_ATTR] = [7, 8]
    assert not requeue_trial(study, frozen, max_retries=2)
    assert requeue_trial(study, frozen, max_retries=3)


def test_stops_are_requeued_without_counting_against_max_retries(study):
    """Issue 22 #11: a trial stopped three times by Ctrl-C was never re-queued again."""
    distributions = {"x": optuna.distributions.FloatDistribution(0, 1)}
    trial = study.ask(distributions)
    for _ in range(4):  # stopped four times, max_retries 2: re-queued every time
        study.tell(trial, state=TrialState.FAIL)
        assert requeue_trial(study, study.get_trials()[trial.number], max_retries=2, stopped=True)
        trial = study.ask(distributions)
    for crashes in range(3):  # then crashes: two retries, no third
        study.tell(trial, state=TrialState.FAIL)
        assert requeue_trial(study, study.get_trials()[trial.number], max_retries=2) == (crashes < 2)
        trial = study.ask(distributions)
    assert len({t.params["x"] for t in study.get_trials() if t.system_attrs.get("failed_trial") == 0}) == 1


def test_what_optuna_5_does_not_do_that_ours_does(tmp_path):
    """studies/README.md, *What Optuna does*: why recovery.py and workers.py exist beside Optuna's own
    heartbeat and retry. When this test fails, Optuna does the job: use its mechanism instead."""
    from optuna.storages import JournalStorage, RetryFailedTrialCallback
    from optuna.storages._heartbeat import BaseHeartbeat

    journal = open_storage(f"journal:{tmp_path / 'j.log'}")
    assert isinstance(journal, JournalStorage) and not isinstance(journal, BaseHeartbeat)  # no heartbeat
    sql = open_storage(f"sqlite:///{tmp_path / 'o.db'}")
    assert isinstance(sql, BaseHeartbeat) and sql.get_heartbeat_interval() == 30  # used where it exists

    # RetryFailedTrialCallback counts every failure: a trial stopped twice by the operator (Ctrl-C,
    # a scheduler's SIGTERM) is dropped at max_retry=1, and its parameters never run.
    study = optuna.create_study(storage=sql, study_name="retries")
    distributions = {"x": optuna.distributions.FloatDistribution(0, 1)}
    retry = RetryFailedTrialCallback(max_retry=1)
    trial = study.ask(distributions)
    for _ in range(2):
        study.tell(trial, state=TrialState.FAIL)
        retry(study, study.get_trials()[trial.number])
        trial = study.ask(distributions)
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.FAIL, TrialState.RUNNING]
    assert "failed_trial" not in study.get_trials()[2].system_attrs  # a fresh sample: the stopped one is lost
    # ours re-queues a stopped trial without counting it (test_stops_are_requeued_without_counting_...)
    # and keeps Optuna's attribute names, so RetryFailedTrialCallback's helpers read our retries
    assert requeue_trial(study, study.get_trials()[1], max_retries=1, stopped=True)
    queued = study.get_trials()[-1]
    assert RetryFailedTrialCallback.retried_trial_number(queued) == 0
    assert RetryFailedTrialCallback.retry_history(queued) == [0, 1]


def test_budget_counts_every_trial_except_requeued_crashes(study):
    for _ in range(2):
        _finish(study)
    crashed = study.ask()
    study.tell(crashed, state=TrialState.FAIL)
    requeue_trial(study, study.get_trials()[crashed.number], 2)
    trials = study.get_trials()
    assert [t.number for t in counted_trials(trials)] == [0, 1, 3]  # 2 is replaced by its retry 3
    assert remaining_trials(study, 3) == 1  # the queued retry still has to run
    retry = study.ask()  # pops the WAITING retry
    assert retry.number == 3 and not is_excess(study, retry.number, 3)
    study.tell(retry, 1.0)
    assert remaining_trials(study, 3) == 0
    surplus = study.ask()
    assert is_excess(study, surplus.number, 3)
    surplus.set_user_attr(EXCESS_ATTR, True)
    study.tell(surplus, state=TrialState.FAIL)
    assert len(counted_trials(study.get_trials())) == 3


def test_storage_urls():
    for url in ("postgresql://u:p@host:5432/db", "journal:some/file.log", "sqlite:///x.db"):
        assert check_storage_url(url) == url
    for url, message in (("sqlite:///:memory:", "in-memory"), ("journal:", "names no file"),
                         ("postgresql://host", "USER"), ("redis://host/0", "not a supported storage")):
        with pytest.raises(ConfigError, match=message):
            check_storage_url(url)


def _hold_lock(path, started, results):
    with file_lock(path):
        started.set()
        time.sleep(0.5)
        results.put(("first", time.monotonic()))


def test_file_lock_excludes_other_processes(tmp_path):
    context = multiprocessing.get_context("spawn")
    started, results = context.Event(), context.Queue()
    holder = context.Process(target=_hold_lock, args=(tmp_path / "l.lock", started, results))
    holder.start()
    assert started.wait(30)
    with file_lock(tmp_path / "l.lock"):
        acquired = time.monotonic()
    _, released = results.get(timeout=30)
    holder.join(30)
    assert acquired >= released


def test_postgres_advisory_lock(postgres_url):
    with storage_lock(postgres_url, "a"):
        with pytest.raises(TimeoutError):
            with storage_lock(postgres_url, "a", timeout=0.3):
                pass
    with storage_lock(postgres_url, "a", timeout=1):
        pass


def test_sql_heartbeat_fails_and_requeues_a_silent_remote_trial(tmp_path):
    seen = []
    storage = open_storage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat_seconds=1, grace_seconds=2,
                           on_stale=lambda s, t: seen.append(t.number) or requeue_trial(s, t, 2))
    study = optuna.create_study(storage=storage, study_name="hb")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.set_user_attr(WORKER_ATTR, "another-machine:1234")  # not ours: only the heartbeat can tell
    storage.record_heartbeat(trial._trial_id)
    time.sleep(3.3)  # SQLite timestamps have 1 s resolution: be sure to pass the 2 s grace
    optuna.storages.fail_stale_trials(study)
    assert seen == [trial.number]
    assert study.get_trials()[trial.number].state == TrialState.FAIL
    assert study.get_trials(states=(TrialState.WAITING,))[0].params == trial.params
