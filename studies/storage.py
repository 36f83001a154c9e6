"""Where Optuna keeps a study, and the cross-process locks and crash recovery that go with it.

Storage URLs:
  sqlite:///PATH             one process (the default: sqlite:///mlruns/optuna.db)
  journal:PATH               several local worker processes (default for --workers > 1:
                             journal:mlruns/optuna-journal.log; Optuna's JournalFileBackend)
  postgresql://USER@HOST/DB  many machines (RDBStorage with heartbeats)

SQL storages get Optuna's trial heartbeats; what happens to the trial of a worker that died is
in studies/recovery.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from foundation.errors import AmpStudyError, ConfigError
from foundation.files import file_lock
from foundation.uris import CONNECT_TIMEOUT, is_postgres, masked, sqlalchemy_url, sqlite_path, unreachable_as_error

DEFAULT_SQLITE = "sqlite:///mlruns/optuna.db"
DEFAULT_JOURNAL = "journal:mlruns/optuna-journal.log"

STORAGE_NAMED = ("the study storage", "or pass another --storage")  # how its errors name it, and the fix


def check_storage_url(url: str, where: str = "storage") -> str:
    """Raise ConfigError unless `url` is a storage this tool supports; returns it unchanged."""
    if url.startswith("journal:"):
        if not journal_path(url):
            raise ConfigError(f"{where}: '{url}' names no file; write journal:PATH, "
                              "e.g. journal:mlruns/optuna-journal.log")
        return url
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        if not url.startswith("sqlite:///") or url in ("sqlite:///", "sqlite:///:memory:"):
            raise ConfigError(f"{where}: '{url}': write sqlite:///relative/path.db or sqlite:////absolute/path.db "
                              "(an in-memory database cannot be shared by trials)")
        return url
    if is_postgres(url):
        if not parsed.hostname or not parsed.path.strip("/"):
            raise ConfigError(f"{where}: '{masked(url)}': expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE")
        return url
    raise ConfigError(f"{where}: '{masked(url)}' is not a supported storage; use sqlite:///PATH (one process), "
                      "journal:PATH (local worker processes) or postgresql://USER@HOST/DB (many machines)")


def journal_path(url: str) -> str:
    return url.removeprefix("journal:").removeprefix("//")


def absolute_url(url: str) -> str:
    """Resolve relative file paths against the current directory, so spawned workers agree."""
    if url.startswith("journal:"):
        return f"journal:{Path(journal_path(url)).resolve()}"
    db = sqlite_path(url)
    if db is not None and not db.is_absolute():
        return f"sqlite:///{db.resolve()}"
    return url


def local_file(url: str) -> Path | None:
    """The file behind a file-based storage URL (None for servers)."""
    if url.startswith("journal:"):
        return Path(journal_path(url))
    return sqlite_path(url)


def open_storage(url: str, *, heartbeat_seconds: int = 30, grace_seconds: int = 120,
                 on_stale: Callable[[Any, Any], None] | None = None) -> Any:
    """An Optuna storage object for `url`; SQL storages get heartbeats and `on_stale(study, trial)`."""
    import optuna

    check_storage_url(url)
    url = absolute_url(url)
    path = local_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs = ({"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT}}
                     if is_postgres(url) else {"connect_args": {"timeout": 60}})
    with warnings.catch_warnings(), unreachable_as_error(url, *STORAGE_NAMED):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: "experimental", fine
        return optuna.storages.RDBStorage(
            sqlalchemy_url(url), engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_seconds,
            grace_period=grace_seconds, heartbeat_stale_trial_callback=on_stale)


def study_names(storage: Any) -> list[str]:
    import optuna

    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


@contextlib.contextmanager
def storage_lock(url: str, name: str, timeout: float = 120.0) -> Iterator[None]:
    """Mutual exclusion between processes sharing `url` (file lock, or a PostgreSQL advisory lock)."""
    if is_postgres(url):
        with _postgres_advisory_lock(url, name, timeout):
            yield
        return
    file = local_file(absolute_url(url))
    lock_dir = file.parent if file is not None else Path("mlruns")
    lock_dir.mkdir(parents=True, exist_ok=True)
    safe = hashlib.sha1(f"{file}:{name}".encode()).hexdigest()[:16]
    with file_lock(lock_dir / f".ampstudy-{safe}.lock", timeout):
        yield


@contextlib.contextmanager
def _postgres_advisory_lock(url: str, name: str, timeout: float) -> Iterator[None]:
    import sqlalchemy

    key = int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big", signed=True)
    engine = sqlalchemy.create_engine(sqlalchemy_url(url), poolclass=sqlalchemy.pool.NullPool,
                                      connect_args={"connect_timeout": CONNECT_TIMEOUT})
    try:
        with unreachable_as_error(url, *STORAGE_NAMED):
            conn = engine.connect()
        with conn:
            deadline = time.monotonic() + timeout
            while not conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"waited {timeout:.0f} s for PostgreSQL advisory lock '{name}'")
                time.sleep(0.05)
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finally:
        engine.dispose()
