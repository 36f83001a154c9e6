"""The many-machine recipe of the README, for real on loopback: an MLflow tracking server on PostgreSQL
serving the artifacts, an Optuna study on PostgreSQL, and two workers started separately, each in its own
UTS namespace with its own hostname (as two machines would be; with AMPSTUDY_HOSTNAME instead where this
user may not create namespaces). Then `promote` registers through the server and `render` loads the
champion from it. Nothing is written to a local MLflow store."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import requests
import soundfile as sf
from optuna.trial import TrialState
from sqlalchemy import create_engine, text

from ampstudy.cli import main
from datamodules.bassman import BassmanDataModule
from studies.mlflow_runs import PARENT_RUN_ATTR
from studies.recovery import WORKER_ATTR
from studies.spec import load_study_spec
from studies.storage import open_storage, sqlalchemy_url
from studies.workers import HOST_ENV, registered_workers
from tests.conftest import global_mlflow_uris_restored, mlflow_process, write_study_file
from training import run_info, tracking

HOSTS = ("worker-a", "worker-b")
MODEL = "scale-out-amp"
SERVER_PASSWORD = "scale-out-Secret-9431"  # the tracking server's admin password (basic-auth app)


def new_database(server_url: str, name: str) -> str:
    """URL of a new database `name` on the PostgreSQL server of `server_url`."""
    engine = create_engine(sqlalchemy_url(server_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def can_unshare_uts() -> bool:
    try:
        return subprocess.run(["unshare", "--uts", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def as_machine(host: str, command: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """`command` as if run on machine `host`: its own hostname in a new UTS namespace (the network,
    loopback included, stays shared), or the documented AMPSTUDY_HOSTNAME where that is not allowed."""
    if can_unshare_uts():
        return ["unshare", "--uts", "sh", "-c", f'hostname {host} && exec "$@"', "sh", *command], env
    return command, {**env, HOST_ENV: host}


@pytest.fixture
def tracking_server(postgres_url, tmp_path):
    """`mlflow server` with a PostgreSQL backend store and served artifacts under tmp_path."""
    store = sqlalchemy_url(new_database(postgres_url, "mlflow_scale_out"))  # postgresql+psycopg2://, as shipped
    artifacts = tmp_path / "served-artifacts"
    command = ["server", "--app-name", "basic-auth", "--backend-store-uri", store, "--artifacts-destination",
               str(artifacts), "--workers", "1"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # its job runner (GenAI jobs) only slows start and stop
    # The README's recipe: MLflow's basic-auth app, its admin created on first start with this password
    # (its user store a SQLite file of the server's, here under tmp_path).
    (tmp_path / "auth.ini").write_text(
        f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{tmp_path / 'basic_auth.db'}\n"
        "admin_username = admin\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 60\n")  # else every request re-hashes the password (PBKDF2)
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(tmp_path / "auth.ini")
    env["MLFLOW_AUTH_ADMIN_PASSWORD"] = SERVER_PASSWORD
    env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = os.urandom(16).hex()  # the auth app's CSRF key, required
    with mlflow_process(command, env, tmp_path) as url, global_mlflow_uris_restored():
        yield url, artifacts


def test_two_machines_share_a_study_through_postgres_and_a_tracking_server(tracking_server, postgres_url,
                                                                         study_data_dir, tmp_path, monkeypatch):
    url, served = tracking_server
    optuna_url = new_database(postgres_url, "optuna_scale_out")
    monkeypatch.chdir(tmp_path)
    unauthenticated = requests.get(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=30)
    assert unauthenticated.status_code == 401  # the server is not open to anyone who can reach it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)  # the README's recipe: every worker exports the three
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SERVER_PASSWORD)
    path = write_study_file(tmp_path / "s.toml", study_data_dir, name="scale-out", n_trials=2,
                            replace={'[pruner]\nkind = "median"': '[pruner]\nkind = "none"',
                                     "audio_seconds = 0\n": "audio_seconds = 0.1\n",
                                     'registered_model = "bassman-wavenet"': f'registered_model = "{MODEL}"'})
    command = [sys.executable, "-m", "ampstudy.cli", "study", "run", str(path), "--storage", optuna_url]
    workers = []
    for host in HOSTS:
        argv, env = as_machine(host, command, dict(os.environ))
        with open(tmp_path / f"{host}.log", "w") as log:
            workers.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))
    codes = [w.wait(timeout=400) for w in workers]
    assert codes == [0, 0], "\n".join((tmp_path / f"{h}.log").read_text()[-3000:] for h in HOSTS)
    assert not [h for h in HOSTS if SERVER_PASSWORD in (tmp_path / f"{h}.log").read_text()]  # never printed

    study = optuna.load_study(study_name="scale-out", storage=open_storage(optuna_url))
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    logs = "\n".join((tmp_path / f"{h}.log").read_text()[-4000:] for h in HOSTS)
    assert len(trials) == 2 and len(study.trials) == 2, \
        f"{[(t.number, t.state.name, t.user_attrs.get('error')) for t in study.trials]}\n{logs}"
    assert {w.split(":")[0] for w in registered_workers(study)} == set(HOSTS)
    assert {t.user_attrs[WORKER_ATTR].split(":")[0] for t in trials} == set(HOSTS)  # both machines trained

    client = tracking.client(url)
    parent = client.get_run(study.user_attrs[PARENT_RUN_ATTR])
    assert parent.info.status == "FINISHED"  # closed by the last worker to leave, whichever machine
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # artifacts go through the server
    runs = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        listed = {f.path for f in client.list_artifacts(run.info.run_id)}
        assert {"audio", "plots", "model", "settings"} <= listed, listed
        on_server = served / experiment.experiment_id / run.info.run_id / "artifacts"
        assert (on_server / "model" / "state_dict.pt").is_file() and any((on_server / "audio").rglob("*.wav"))

    assert main(["promote", str(path), "--storage", optuna_url]) == 0
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.tags["mlflow_run_id"] in {r.info.run_id for r in runs}
    assert any(served.rglob("MLmodel"))  # the registered model's files live on the server too

    di = 0.3 * np.sin(2 * np.pi * 110 * np.arange(3200) / 16000).astype(np.float32)
    sf.write(tmp_path / "di.wav", di, 16000, subtype="FLOAT")
    knobs = ["--volume", "0.5", "--treble", "0.5", "--bass", "0.5", "--middle", "0.5"]  # a trained setting
    assert main(["render", f"models:/{MODEL}@champion", str(tmp_path / "di.wav"), str(tmp_path / "amp.wav"),
                 *knobs]) == 0
    out, rate = sf.read(tmp_path / "amp.wav", dtype="float32")
    assert rate == 16000 and len(out) == len(di) and np.isfinite(out).all() and np.abs(out).max() > 0
    assert not list(Path(tmp_path).rglob("mlflow.db"))  # no local store anywhere

    # Workers' first trials log the same new dataset at the same moment; MLflow checks then inserts its
    # row, so all but one of them got a unique-key violation from PostgreSQL (a flaky failed trial).
    data = BassmanDataModule(load_study_spec(path).base.data, receptive_field=64, segment_samples=256,
                             batch_size=1, progress=False)
    data.setup()
    experiment_id = client.create_experiment("dataset-race")
    at_once = [client.create_run(experiment_id).info.run_id for _ in range(6)]
    with concurrent.futures.ThreadPoolExecutor(len(at_once)) as pool:
        list(pool.map(lambda run_id: run_info.log_dataset(client, run_id, data), at_once))
    assert all(len(client.get_run(r).inputs.dataset_inputs) == 1 for r in at_once)


def test_a_hostname_from_the_environment_names_the_machine(monkeypatch):
    """Where machines (or containers) share a hostname, AMPSTUDY_HOSTNAME tells their workers apart; a
    worker on "this" host is judged by its pid, one elsewhere by its heartbeat."""
    import socket
    import time

    from studies.workers import worker_alive, worker_id

    monkeypatch.setenv(HOST_ENV, "box-7")
    assert worker_id() == f"box-7:{os.getpid()}"
    assert worker_alive(worker_id(), {"beat": time.time()}, grace_seconds=5)
    assert not worker_alive("box-7:999999999", {"beat": time.time()}, grace_seconds=5)  # no such pid here
    elsewhere = f"{socket.gethostname()}:{os.getpid()}"  # another machine now, whatever its pid
    assert worker_alive(elsewhere, {"beat": time.time()}, 5) and not worker_alive(elsewhere, {"beat": 0}, 5)
