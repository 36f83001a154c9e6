"""Where runs are tracked: a local SQLite MLflow store under ./mlruns unless told otherwise.

MLflow 3.17 refuses the bare ./mlruns file store, so the default is a SQLite backend with plain
file artifacts beside it; `MLFLOW_TRACKING_URI` (e.g. an `http://` tracking server shared by many
workers) overrides it.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from foundation.files import file_lock
from foundation.uris import sqlite_path

TRACKING_DIR = "mlruns"


def default_tracking_uri() -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    root = Path(TRACKING_DIR).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def artifact_root(tracking_uri: str) -> str | None:
    """Artifacts for a SQLite store go to mlruns/artifacts beside the database; a server decides its own."""
    db_path = sqlite_path(tracking_uri)
    return None if db_path is None else (db_path.parent / "artifacts").resolve().as_uri()


_ready_stores: set[str] = set()


def client(tracking_uri: str | None = None) -> MlflowClient:
    uri = tracking_uri or default_tracking_uri()
    # The registry lives in the same store; pyfunc loading uses the module-level URIs, so keep them in step.
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    db = sqlite_path(uri)
    if db is None or uri in _ready_stores:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    # MLflow creates and migrates a SQLite store on first use; two processes doing that at the same
    # moment fail ("table ... already exists"), so this process's first use happens under a lock.
    db.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(db.parent / ".ampstudy-init.lock"):
        mlflow_client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        mlflow_client.search_experiments(max_results=1)
        mlflow_client.search_registered_models(max_results=1)
    _ready_stores.add(uri)
    return mlflow_client


def ensure_experiment(name: str, tracking_uri: str | None = None) -> str:
    """Experiment id for `name`, created if missing; safe when several workers race to create it."""
    uri = tracking_uri or default_tracking_uri()
    mlflow_client = client(uri)
    existing = mlflow_client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    try:
        return mlflow_client.create_experiment(name, artifact_location=_experiment_artifacts(uri, name))
    except MlflowException:
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _experiment_artifacts(tracking_uri: str, name: str) -> str | None:
    root = artifact_root(tracking_uri)
    if root is None:
        return None
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return f"{root}/{safe}"
