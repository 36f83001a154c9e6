"""The MLflow UI as a person sees it: Debian's Chromium (headless, driven by Playwright, no browser
download) over `mlflow ui` serving a tiny finished, reported and promoted study. The links are the
ones ampstudy prints (training.tracking, studies.mlflow_runs), pointed at the test's port."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import _free_port, http_ok, wait_for

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync"]
PAGE_SECONDS = 60_000  # ms Playwright waits for an element (the UI loads its bundles on first use)


@pytest.fixture(scope="module")
def ui(finished_study):
    """(browser page, links) over `mlflow ui` on a free loopback port; the study reported and promoted."""
    playwright = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed; `make system` installs it")
    import optuna

    from studies import mlflow_runs
    from studies.promote import promote
    from studies.report import report_study
    from studies.runner import existing_study_storage
    from studies.spec import load_study_spec
    from studies.storage import open_storage
    from training import tracking

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(finished_study["root"])
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        spec = load_study_spec(finished_study["path"])
        uri = tracking.default_tracking_uri()
        study = optuna.load_study(study_name=spec.name, storage=open_storage(existing_study_storage(spec)))
        parent = study.user_attrs[mlflow_runs.PARENT_RUN_ATTR]
        report_study(study, spec, uri, parent, quiet=True)
        promoted = promote(spec)
        client = tracking.client(uri)
        best_run = client.get_model_version(spec.options.registered_model, promoted.version).run_id
        experiment = client.get_run(best_run).info.experiment_id
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        links = {
            "trials": mlflow_runs.trials_link(uri, experiment, spec.name),
            "audio": tracking.run_link(experiment, best_run, uri, "artifacts/" + _first(client, best_run, "audio", ".wav")),
            "plot": tracking.run_link(experiment, best_run, uri, "artifacts/" + _first(client, best_run, "plots", ".png")),
            "version": tracking.version_link(spec.options.registered_model, promoted.version, uri),
            "report": tracking.run_link(experiment, parent, uri, "artifacts/study/report.html"),
        }
        links = {k: v.replace(tracking.ui_base(uri), base) for k, v in links.items()}
        trials = [r.data.tags["mlflow.runName"] for r in mlflow_runs.trial_runs(uri, parent)]
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                                   "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: http_ok(f"{base}/health"), 120, interval=0.5, what="mlflow ui to answer")
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(PAGE_SECONDS)
            yield page, links, trials
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def _first(client, run_id: str, folder: str, suffix: str) -> str:
    """Path of the first artifact under `folder` ending in `suffix` (depth-first)."""
    for item in client.list_artifacts(run_id, folder):
        if item.is_dir:
            with contextlib.suppress(LookupError):
                return _first(client, run_id, item.path, suffix)
        elif item.path.endswith(suffix):
            return item.path
    raise LookupError(f"no {suffix} under {folder}")


def test_browse_link_lands_on_the_trial_runs(ui):
    page, links, trials = ui
    page.goto(links["trials"])
    for name in trials:  # every trial, flat (their study run filtered out), in the machine-learning view
        page.get_by_text(name, exact=True).wait_for()
    assert page.get_by_text("Model registry").is_visible()


def test_a_trial_plays_its_audio_and_shows_its_plots(ui):
    page, links, _ = ui
    page.goto(links["audio"])
    audio = page.locator("audio").first
    page.wait_for_function("a => a.readyState >= 1 && a.duration > 0", arg=audio.element_handle())
    assert audio.evaluate("a => a.currentSrc") != ""
    page.goto(links["plot"])
    image = page.locator("img[src]").last
    page.wait_for_function("i => i.complete && i.naturalWidth > 100", arg=image.element_handle())


def test_the_registered_version_shows_champion_and_its_input(ui):
    page, links, _ = ui
    page.goto(links["version"])
    page.get_by_text("champion").first.wait_for()
    page.get_by_text("Inputs (1)").click()
    page.get_by_text("audio (required)").wait_for()
    page.get_by_text("Tensor (dtype: float32, shape: [-1])").wait_for()


def test_the_study_page_plays_the_best_trial_and_links_every_trial(ui):
    page, links, trials = ui
    page.goto(links["report"])
    frame = page.frame_locator("iframe")
    players = frame.locator("audio")
    players.first.wait_for()
    assert players.first.evaluate("a => new Promise(done => a.readyState >= 1 ? done(a.duration)"
                                  " : a.addEventListener('loadedmetadata', () => done(a.duration)))") > 0
    hrefs = frame.locator("table a").evaluate_all("links => links.map(a => a.href)")
    assert len(hrefs) == len(trials) and all(h.startswith(links["trials"].split("#")[0]) for h in hrefs)
