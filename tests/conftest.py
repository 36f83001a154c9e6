"""Shared fixtures. Study tests: a throwaway PostgreSQL server, the tiny SPICE dataset (simulated once
per session), and a per-test working directory so mlruns/ and optuna files land in tmp."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_STUDY = REPO / "studies" / "tiny.toml"
POSTGRES_PASSWORD = "pg-Test-pw5"  # of the test server's superuser (postgres_url)
# Optuna's log handler keeps the stderr it was created with. Created here, before any test captures
# output; created inside a capsys test (a test file run on its own), every later Optuna message
# went to that test's closed stream, as a "Logging error" traceback in the next test's stderr.
optuna.logging.get_logger("optuna")


def _postgres_bindir() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").is_file() and Path(candidate, "pg_ctl").is_file():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """postgresql:// URL of a fresh server on 127.0.0.1 in a temp dir (stopped after the session).

    PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` system user
    (created by the Debian package) and commands go through runuser.
    """
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed; `make system` installs them")
    as_root = os.geteuid() == 0
    if as_root and not shutil.which("runuser"):
        pytest.skip("running as root without runuser: cannot start PostgreSQL as an unprivileged user")
    root = Path(tempfile.mkdtemp(prefix="ampstudy-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    prefix: list[str] = []
    if as_root:
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to own the test cluster")
        for path in (root, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=120,
                       env={**os.environ, "PGPASSWORD": POSTGRES_PASSWORD})

    # Logins over TCP need the password (as on a real server: a wrong one is refused); the socket trusts.
    password_file = root / "pw"
    password_file.write_text(POSTGRES_PASSWORD + "\n")
    if as_root:
        os.chown(password_file, user.pw_uid, user.pw_gid)
    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
        "--auth-host=scram-sha-256", f"--pwfile={password_file}", "-E", "UTF8")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60",
        "-o", f"-k {sockets} -p {port} -h 127.0.0.1 -c max_connections=200 -c fsync=off", "start")
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "optuna")
        yield f"postgresql://postgres:{POSTGRES_PASSWORD}@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def study_data_dir(tmp_path_factory):
    """The tiny study's SPICE dataset, simulated once for every study test."""
    from datamodules.dataset import prepare_dataset
    from studies.spec import load_study_spec

    directory = tmp_path_factory.mktemp("study-data")
    spec = load_study_spec(TINY_STUDY)
    import dataclasses

    prepare_dataset(dataclasses.replace(spec.base.data, data_dir=str(directory)), progress=False)
    return directory


@pytest.fixture
def study_workdir(tmp_path, monkeypatch):
    """Run in a fresh directory (mlruns/ lands there) with the default MLflow store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory, study_data_dir):
    """A tiny study without pruning on ESR (so several trials complete), run once for the promotion,
    registry and UI tests; its mlruns/ (tracking store and registry) lies in `root`. A compute limit
    prunes the seeded sampler's trial 1 (352 MACs/sample) before it trains, so the study also shows a
    PRUNED trial (the UI tests look for it); trials 0 and 2 complete."""
    from optuna.trial import TrialState

    from studies.runner import run_study
    from studies.spec import load_study_spec

    root = tmp_path_factory.mktemp("promote")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        path = write_study_file(root / "s.toml", study_data_dir, name="promo", n_trials=3,
                                replace={'[pruner]\nkind = "median"': '[pruner]\nkind = "none"',
                                         "audio_seconds = 0\n": "audio_seconds = 0.5\n",  # played in test_mlflow_ui
                                         'metric = "val_esr_tail_aware"':
                                             'metric = "val_esr_tail_aware"\nmax_macs_per_sample = 300'})
        study = run_study(load_study_spec(path), report=False)
    complete = [t.number for t in study.get_trials(states=(TrialState.COMPLETE,))]
    pruned = [t.number for t in study.get_trials(states=(TrialState.PRUNED,))]
    assert len(complete) >= 2, "need two complete trials to compare"
    assert pruned, "need a pruned trial (the compute limit in the study file prunes none now: lower it)"
    return {"root": root, "path": path, "complete": complete, "pruned": pruned}


@pytest.fixture
def in_study_dir(finished_study, monkeypatch):
    """Inside the finished study's directory, with its default MLflow store."""
    monkeypatch.chdir(finished_study["root"])
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return finished_study


def write_study_file(path: Path, data_dir: Path, *, name: str = "tiny-test", n_trials: int = 3,
                     extra: str = "", replace: dict[str, str] | None = None) -> Path:
    """studies/tiny.toml adapted for a test: its own name and budget, the shared dataset, faster trials."""
    text = TINY_STUDY.read_text()
    text = text.replace('name = "tiny"', f'name = "{name}"', 1)
    text = text.replace("n_trials = 10", f"n_trials = {n_trials}", 1)
    text = text.replace("[base.data]\n", f'[base.data]\ndata_dir = "{data_dir}"\n', 1)
    # Faster trials: audio examples and plots are the bulk of a tiny trial's time.
    text = text.replace("max_epochs = 3", "max_epochs = 2", 1).replace("audio_seconds = 0.25", "audio_seconds = 0", 1)
    text = text.replace("limit_train_batches = 6", "limit_train_batches = 3", 1)
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new, 1)
    path.write_text(text + extra)
    return path


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_for_output(path: Path, text: str, process, timeout: float = 240) -> None:
    """Wait until a subprocess logging to `path` printed `text` (it must not have exited first)."""
    def printed():
        if process.poll() is not None:
            raise AssertionError(f"the process ended (exit {process.returncode}) before printing {text!r}:\n"
                                 + path.read_text()[-3000:])
        return text in path.read_text()
    wait_for(printed, timeout, interval=0.1, what=repr(text))


_STUDY_RUNS: list[subprocess.Popen] = []


def start_study_run(path: Path, name: str, *args: str):
    """`ampstudy study run PATH ARGS` in a subprocess writing to PATH.log, returned once it printed that
    study `name` exists (so opening its database no longer races the creation of its tables). It runs
    in a process group of its own, killed with its workers when the test ends (_no_study_run_outlives_its_test)."""
    log_path = path.with_suffix(".log")
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "ampstudy.cli", "study", "run", str(path), *args],
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    _STUDY_RUNS.append(process)
    wait_for_output(log_path, f"study '{name}': storage", process)
    return process


@pytest.fixture(autouse=True)
def _no_study_run_outlives_its_test():
    """A test that fails while it holds a study run frozen (SIGSTOP) would leave it holding its SQLite
    locks, and every later test on the same store would fail with "database is locked" (seen in CI)."""
    yield
    while _STUDY_RUNS:
        process = _STUDY_RUNS.pop()
        for signum in (signal.SIGCONT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)


def freeze(pid: int) -> None:
    """SIGSTOP `pid` and wait until it is stopped: what it wrote so far is all it will have written."""
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "Tt", 10,
             interval=0.01, what=f"process {pid} to stop")


@contextlib.contextmanager
def mlflow_process(arguments: list[str], env: dict[str, str], folder: Path):
    """`mlflow ARGUMENTS` (server, models serve) on a free loopback port; yields its URL once /health
    answers, then stops it and its workers."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with open(folder / "mlflow.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "mlflow", *arguments, "-h", "127.0.0.1", "-p", str(port)],
                                   env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: process.poll() is not None or http_ok(f"{url}/health"), timeout=180, what=" ".join(arguments))
        assert process.poll() is None, (folder / "mlflow.log").read_text()[-4000:]
        yield url
    finally:  # by its pid: the process and its workers form a process group led by it
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def global_mlflow_uris_restored():
    """tracking.client() points mlflow's module-level URIs at a store; put them back for later tests."""
    import mlflow

    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])
