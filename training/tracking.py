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
from foundation.uris import is_postgres, masked, probe_postgres, sqlalchemy_url, sqlite_path, without_credentials

TRACKING_DIR = "mlruns"


def default_tracking_uri(create: bool = True) -> str:
    """MLFLOW_TRACKING_URI, else the SQLite store under mlruns/ (its folder made unless `create` is False)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    root = Path(TRACKING_DIR).resolve()
    if create:
        root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def artifact_root(tracking_uri: str) -> str | None:
    """Artifacts for a SQLite store go to mlruns/artifacts beside the database; a server decides its own."""
    db_path = sqlite_path(tracking_uri)
    return None if db_path is None else (db_path.parent / "artifacts").resolve().as_uri()


_ready_stores: set[str] = set()


def client(tracking_uri: str | None = None) -> MlflowClient:
    uri = sqlalchemy_url(tracking_uri or default_tracking_uri())  # postgresql:// with the driver we ship
    # The registry lives in the same store; pyfunc loading uses the module-level URIs, so keep them in step.
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    db = sqlite_path(uri)
    if is_postgres(uri) and uri not in _ready_stores:
        # MLflow would retry a refused login with exponential back-off (mlflow.store.db.utils) and
        # end in two tracebacks.
        probe_postgres(uri, "the MLflow tracking store", "or set another: tracking_uri in the study file, "
                       "MLFLOW_TRACKING_URI, or train --tracking-uri")
        _ready_stores.add(uri)
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


# Links into the MLflow UI (3.x). The UI decides between its GenAI view (traces, an empty dashboard)
# and its machine-learning view (runs, charts, Model Registry in the menu) by the `workflowType`
# query parameter of the page's route, else a choice the browser remembers (the sidebar's "Model
# training" switch: one click, kept in the browser's local storage); the experiment tag
# `mlflow.experimentKind` is not read while that switch exists. Every route we write names the view.
# A route ("#/experiments/1/runs/abc?...") is what descriptions and reports carry: relative, it opens
# on whichever host and port serves the UI. A link (ui_base + "/" + route) is what we print.
UI_PORT = 5000
ML_VIEW = "workflowType=machine_learning"


def ui_base(tracking_uri: str | None = None) -> str:
    """The UI's address: the tracking server itself (without any user:password the URI carries: the
    address is printed, and written into reports), else `mlflow ui` on its default loopback port."""
    uri = tracking_uri or default_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return f"http://127.0.0.1:{UI_PORT}"
    return without_credentials(uri.split("?", 1)[0].split("#", 1)[0]).rstrip("/")


def ui_command(tracking_uri: str | None = None) -> str:
    """The command that serves the UI for this store ("" for a tracking server: it serves one already),
    with any password in the store's URI shown as *** (the line lands in logs)."""
    uri = tracking_uri or default_tracking_uri()
    if uri.startswith(("http://", "https://")):
        return ""
    return f"mlflow ui --backend-store-uri {masked(uri)} --host 127.0.0.1 --port {UI_PORT}"


def runs_route(experiment_id: str, view: str = "") -> str:
    """The experiment's runs table, as its saved view `view` (studies/runs_view.py) lays it out."""
    return f"#/experiments/{experiment_id}/runs?{'viewStateShareKey=' + view + '&' if view else ''}{ML_VIEW}"


def run_route(experiment_id: str, run_id: str, tab: str = "") -> str:
    """One run's page; `tab` e.g. "artifacts/study/report.html" or "model-metrics"."""
    return f"#/experiments/{experiment_id}/runs/{run_id}{'/' + tab if tab else ''}?{ML_VIEW}"


def version_route(name: str, version: str) -> str:
    return f"#/models/{name}/versions/{version}?{ML_VIEW}"


def link(route: str, tracking_uri: str | None = None) -> str:
    """The absolute address of a route on the UI serving this store (for a terminal or a file)."""
    return f"{ui_base(tracking_uri)}/{route}"


def run_link(experiment_id: str, run_id: str, tracking_uri: str | None = None, tab: str = "") -> str:
    return link(run_route(experiment_id, run_id, tab), tracking_uri)


def version_link(name: str, version: str, tracking_uri: str | None = None) -> str:
    return link(version_route(name, version), tracking_uri)
