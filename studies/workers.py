"""Who is working on a study: each worker's presence, heartbeat and end, kept in the study itself.

Every worker process (`study run` with --workers 1, or each spawned worker, on any machine)
registers a study system attribute `ampstudy.worker:<host>:<pid>` = {beat, started, ended, run,
index} (<host>: the hostname, or AMPSTUDY_HOSTNAME where machines share one) and a daemon thread refreshes `beat` (wall-clock seconds) every `heartbeat_seconds`. This
works the same on every storage, including the journal file, which has no heartbeat of its own in
Optuna 5 (only RDBStorage implements BaseHeartbeat). It answers two questions:

- is the worker of a RUNNING trial still alive? (on this host: its pid exists; elsewhere: its beat
  is younger than `grace_seconds`, so the hosts' clocks must agree to well within that; NTP does);
- is this the last worker of the study? (then it closes the MLflow parent run).

Each `study run` also takes a run number from the study (`ampstudy.runs_started`), so every
worker of every run, on any machine, can derive its own sampler stream from the study seed.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

WORKER_PREFIX = "ampstudy.worker:"  # study system attr per worker process
RUNS_ATTR = "ampstudy.runs_started"  # study system attr: `study run` invocations so far
HOST_ENV = "AMPSTUDY_HOSTNAME"
PID_REUSE_FACTOR = 10  # a local pid whose worker has not beaten for this many grace periods is someone else


def host_name() -> str:
    """This machine in worker ids: AMPSTUDY_HOSTNAME when set (for machines or containers that share one
    hostname), else the hostname. Workers on one host must agree on it: it decides whether a pid can be checked."""
    return os.environ.get(HOST_ENV) or socket.gethostname()


def worker_id() -> str:
    return f"{host_name()}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def registered_workers(study: Any) -> dict[str, dict[str, Any]]:
    """{worker id: its entry} for every worker that ever registered with the study."""
    attrs = study._storage.get_study_system_attrs(study._study_id)
    return {key.removeprefix(WORKER_PREFIX): value for key, value in attrs.items()
            if key.startswith(WORKER_PREFIX) and isinstance(value, dict)}


def worker_alive(worker: str, entry: dict[str, Any] | None, grace_seconds: float,
                 now: float | None = None) -> bool | None:
    """True/False when it can be told, None for a worker on another host that never registered
    (an older ampstudy): then only the storage's own heartbeat (SQL storages) can tell."""
    if entry is not None and entry.get("ended"):
        return False
    host, _, pid = worker.rpartition(":")
    if host == host_name() and pid.isdigit():
        # The pid decides; a beat silent for far longer than any hiccup means the pid was reused.
        silent = (now or time.time()) - float(entry.get("beat", 0)) if entry is not None else 0.0
        reused = silent > PID_REUSE_FACTOR * grace_seconds
        return pid_alive(int(pid)) and not reused
    if entry is None:
        return None
    return (now or time.time()) - float(entry.get("beat", 0)) <= grace_seconds


def other_live_workers(study: Any, me: str, grace_seconds: float) -> list[str]:
    return [w for w, entry in registered_workers(study).items()
            if w != me and worker_alive(w, entry, grace_seconds)]


def next_run_number(study: Any) -> int:
    """The number of this `study run` (0, 1, ...); call under the study's storage lock."""
    attrs = study._storage.get_study_system_attrs(study._study_id)
    number = int(attrs.get(RUNS_ATTR, 0))
    study._storage.set_study_system_attr(study._study_id, RUNS_ATTR, number + 1)
    return number


class WorkerPresence:
    """This process's entry in the study: `start()` registers it and starts the heartbeat thread,
    `end()` stops the thread and marks the entry ended."""

    def __init__(self, study: Any, heartbeat_seconds: float, worker: str | None = None,
                 **info: Any) -> None:
        self.study = study
        self.worker = worker or worker_id()
        self.heartbeat_seconds = heartbeat_seconds
        self.entry = {"started": time.time(), "ended": False, **info}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self, **changes: Any) -> None:
        self.entry.update(changes, beat=time.time())
        self.study._storage.set_study_system_attr(self.study._study_id, WORKER_PREFIX + self.worker, self.entry)

    def start(self) -> None:
        self._write()
        self._thread = threading.Thread(target=self._beat, name="ampstudy-worker-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                self._write()
            except Exception:  # a database hiccup must not kill the worker; the next beat retries
                pass

    def end(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._write(ended=True)
