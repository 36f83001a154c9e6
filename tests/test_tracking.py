"""The local MLflow store: several processes may be the first to use a fresh SQLite store at once;
the UI hint printed for a store never shows its password."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import pathlib, sys, time
from training import tracking
folder, me = pathlib.Path(sys.argv[2]), sys.argv[3]
(folder / f"ready-{me}").touch()
while len(list(folder.glob("ready-*"))) < 3:  # a barrier: all three make their first use together
    time.sleep(0.01)
print(tracking.ensure_experiment("together", sys.argv[1]))
"""


def test_processes_first_using_one_fresh_sqlite_store_all_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    workers = [subprocess.Popen([sys.executable, "-c", SCRIPT, uri, str(tmp_path), str(i)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for i in range(3)]
    results = [w.communicate(timeout=120) for w in workers]
    assert [w.returncode for w in workers] == [0] * 3, [err[-2000:] for _, err in results]
    assert len({out.strip() for out, _ in results}) == 1  # one experiment, whoever created it


def test_the_ui_hint_never_prints_a_password():
    from training.tracking import ui_command

    hint = ui_command("postgresql+psycopg2://optuna:s3cret@db.example:5432/mlflow")
    assert "s3cret" not in hint and "postgresql+psycopg2://optuna:***@db.example:5432/mlflow" in hint
    assert ui_command("http://tracking:5000") == ""  # a tracking server serves its own UI


def test_ui_links_to_a_tracking_server_never_carry_its_password():
    """A tracking URI with user:password in it: the links we print and write into reports drop them."""
    from training.tracking import run_link, ui_base

    uri = "http://admin:s3cret@tracking-host:5000/"
    assert ui_base(uri) == "http://tracking-host:5000" and ui_base("https://h.example/mlflow/") == "https://h.example/mlflow"
    link = run_link("1", "abc", uri, "artifacts/study/report.html")
    assert "s3cret" not in link and "admin" not in link and link.startswith("http://tracking-host:5000/#/experiments/1/")
