"""The MLflow UI as a person sees it: Debian's Chromium (headless, driven by Playwright, no browser
download) over `mlflow ui` on a free port that is not 5000, serving a tiny finished, reported and
promoted study (one trial pruned). The first link is the one `study report` prints (the README's
browse link), pointed at the test's port; the others are the ones the pages themselves carry.

Set AMPSTUDY_UI_SCREENSHOTS=docs/ui to refresh the README's screenshots from this run.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import _free_port, http_ok, wait_for

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync"]
PAGE_MS = 60_000  # Playwright waits this long for an element (the UI loads its bundles on first use)
# MLflow opens its Assistant panel on a browser's first visit: closed, as a user closes it once.
NO_ASSISTANT = ("localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
                "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');")
SHOTS = os.environ.get("AMPSTUDY_UI_SCREENSHOTS", "")


@pytest.fixture(scope="module")
def ui(finished_study):
    """(browser, server base, links, study facts) over `mlflow ui` on a free loopback port."""
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
        promoted = promote(spec)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            report_study(study, spec, uri, parent)  # after promote: the description names the version
        browse = printed.getvalue().split("browse the trials, best first:\n")[1].split()[0]
        client = tracking.client(uri)
        best_run = client.get_model_version(spec.options.registered_model, promoted.version).run_id
        experiment = client.get_run(best_run).info.experiment_id
        port = _free_port()
        while port == 5000:
            port = _free_port()
        base = f"http://127.0.0.1:{port}"
        links = {
            "trials": browse,
            "study": tracking.run_link(experiment, parent, uri),
            "best": tracking.run_link(experiment, best_run, uri),
            "audio": tracking.run_link(experiment, best_run, uri, "artifacts/" + _first(client, best_run, "audio", ".wav")),
            "plot": tracking.run_link(experiment, best_run, uri, "artifacts/" + _first(client, best_run, "plots", ".png")),
            "version": tracking.version_link(spec.options.registered_model, promoted.version, uri),
            "report": tracking.run_link(experiment, parent, uri, "artifacts/study/report.html"),
        }
        assert all(link.startswith(tracking.ui_base(uri)) for link in links.values()), links
        links = {k: v.replace(tracking.ui_base(uri), base) for k, v in links.items()}
        runs = {r.data.tags["mlflow.runName"]: r for r in mlflow_runs.trial_runs(uri, parent)}
        report_file = Path(client.download_artifacts(parent, "study/report.html", str(finished_study["root"])))
        facts = {"runs": runs, "pruned": finished_study["pruned"], "report_file": report_file,
                 "ui_base": tracking.ui_base(uri)}
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                                   "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: http_ok(f"{base}/health"), 120, interval=0.5, what="mlflow ui to answer")
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
            yield browser, base, links, facts
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


def _page(browser, height: int = 900):
    """A fresh browser profile (nothing remembered), its Assistant panel closed."""
    context = browser.new_context(viewport={"width": 1400, "height": height})
    context.add_init_script(NO_ASSISTANT)
    page = context.new_page()
    page.set_default_timeout(PAGE_MS)
    return page


def _shot(page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.wait_for_timeout(1500)  # let charts and fonts settle
        page.screenshot(path=str(Path(SHOTS) / name))


def _in_training_view(page) -> bool:
    """The machine-learning sidebar (Runs, Model registry), not the GenAI one (Evaluation runs, Judges)."""
    registry, evaluations = page.get_by_text("Model registry", exact=True), page.get_by_text("Evaluation runs", exact=True)
    registry.or_(evaluations).first.wait_for()
    return registry.count() > 0 and evaluations.count() == 0


def test_the_browse_link_ranks_the_trials_with_their_numbers_and_states(ui):
    browser, base, links, facts = ui
    page = _page(browser)
    page.goto(links["trials"])
    for name in facts["runs"]:  # every trial, flat (the study run filtered out)
        page.get_by_text(name, exact=True).wait_for()
    objective = page.locator('.ag-header-cell[col-id="metrics.`best_val_esr_tail_aware`"]')
    objective.wait_for()
    headers = page.locator(".ag-header-cell[col-id]").evaluate_all("cells => cells.map(c => c.getAttribute('col-id'))")
    # (the compute columns follow, off screen to the right: the grid does not draw them until scrolled to)
    for column in ("tags.`optuna.state`", "metrics.`best_val_esr_worst_scored_setting`"):
        assert column in headers, (column, headers)
    assert objective.is_visible()
    # Best first, and the objective's digits are all shown (they were cut off at 100 px).
    ranked = sorted((r for r in facts["runs"].values() if "best_val_esr_tail_aware" in r.data.metrics),
                    key=lambda r: r.data.metrics["best_val_esr_tail_aware"])
    first_row = page.locator(".ag-center-cols-container .ag-row[row-index='0']")
    assert ranked[0].data.tags["mlflow.runName"] in " ".join(page.locator(".ag-row[row-index='0']").all_inner_texts())
    cell = first_row.locator('[col-id="metrics.`best_val_esr_tail_aware`"]')
    assert float(cell.inner_text()) == pytest.approx(ranked[0].data.metrics["best_val_esr_tail_aware"])
    assert cell.evaluate("c => c.scrollWidth <= c.clientWidth"), "the value is cut off"
    # A pruned trial reads PRUNED in the state column, a complete one COMPLETE.
    states = page.locator('.ag-center-cols-container [col-id="tags.`optuna.state`"]').all_inner_texts()
    assert states.count("PRUNED") == len(facts["pruned"]) and "COMPLETE" in states, states
    _shot(page, "trials.png")
    page.context.close()


def test_one_click_keeps_the_training_view_when_clicking_into_a_trial(ui):
    browser, base, links, facts = ui
    page = _page(browser)
    page.goto(links["trials"])
    name = next(n for n, r in facts["runs"].items() if "best_val_esr_tail_aware" in r.data.metrics)  # trained
    page.get_by_text(name, exact=True).click()  # MLflow's own link: no view in its address
    page.wait_for_url(re.compile(r".*/runs/[0-9a-f]{32}$"))
    assert not _in_training_view(page)  # MLflow's default (GenAI) view: what a new user met
    # The README's one click: "Model training" on the UI's home page; the browser remembers it.
    page.goto(base + "/")
    page.get_by_text("Model training", exact=True).click()
    page.goto(links["trials"])
    page.get_by_text(name, exact=True).click()
    page.wait_for_url(re.compile(r".*/runs/[0-9a-f]{32}$"))
    assert _in_training_view(page)
    page.get_by_text("Model metrics", exact=True).first.click()
    page.get_by_placeholder("Search metric charts").fill("_db")
    page.get_by_text("val_esr_tail_aware_db", exact=True).first.wait_for()  # the objective's curve in dB
    page.get_by_text("Overview", exact=True).first.click()
    _shot(page, "trial.png")
    page.context.close()


def test_every_description_link_opens_a_page_of_this_server(ui):
    browser, base, links, facts = ui
    page = _page(browser, height=1100)
    page.goto(links["study"])
    page.get_by_text("Show more", exact=True).click()
    description = page.locator("a[href^='#/']").filter(has_text=re.compile(r"trial #|browse them|report\.html|v\d"))
    hrefs = description.evaluate_all("links => links.map(a => [a.textContent, a.href])")
    texts = [text for text, _ in hrefs]
    assert "browse them, best first" in texts and "study/report.html" in texts, texts
    assert any(t.startswith("trial #") for t in texts) and any(re.search(r" v\d+$", t) for t in texts), texts
    assert all(href.startswith(base + "/#/") for _, href in hrefs), hrefs  # relative: any host, any port
    _shot(page, "study.png")
    for text, _ in hrefs:  # each opens (in a new tab, as MLflow opens description links) on this server
        with page.context.expect_page() as opened:
            page.get_by_text(text, exact=True).first.click()
        tab = opened.value
        tab.wait_for_load_state()
        assert tab.url.startswith(base + "/#/"), tab.url
        if text.startswith("trial #"):
            tab.get_by_text("Parent run", exact=True).wait_for()
        elif text == "browse them, best first":
            tab.locator('.ag-header-cell[col-id="metrics.`best_val_esr_tail_aware`"]').wait_for()
        elif text == "study/report.html":
            tab.frame_locator("iframe").locator("h1").wait_for()
        else:
            tab.get_by_text("champion").first.wait_for()
        tab.close()
    page.context.close()


def test_a_trials_description_lists_only_artifact_folders_it_has(ui):
    browser, base, links, facts = ui
    page = _page(browser)
    page.goto(links["best"])
    page.get_by_text("Show more", exact=True).first.click()
    note = page.get_by_text(re.compile(r"artifacts: audio/")).last
    listed = re.findall(r"(\w+)/ \(", note.inner_text())
    assert listed, note.inner_text()
    page.get_by_text("Artifacts", exact=True).first.click()
    for folder in listed:
        page.get_by_text(folder, exact=True).first.wait_for()


def test_a_trial_plays_its_audio_and_shows_its_plots(ui):
    browser, base, links, _ = ui
    page = _page(browser)
    page.goto(links["audio"])
    audio = page.locator("audio").first
    page.wait_for_function("a => a.readyState >= 1 && a.duration > 0", arg=audio.element_handle())
    assert audio.evaluate("a => a.currentSrc") != ""
    page.context.close()
    page = _page(browser)  # a fresh page: MLflow keeps the selected artifact when only the route changes
    page.goto(links["plot"])
    image = page.locator("img[src]").last
    page.wait_for_function("i => i.complete && i.naturalWidth > 100", arg=image.element_handle())
    page.context.close()


def test_the_registered_version_shows_champion_and_its_input(ui):
    browser, base, links, _ = ui
    page = _page(browser)
    page.goto(links["version"])
    page.get_by_text("champion").first.wait_for()
    assert not page.get_by_text("n/a").count()  # numbers the evaluation did not produce are left out
    page.get_by_text("Inputs (1)").click()
    page.get_by_text("audio (required)").wait_for()
    page.get_by_text("Tensor (dtype: float32, shape: [-1])").wait_for()
    page.context.close()


def test_the_report_plays_audio_and_its_links_open_in_their_own_tab(ui):
    browser, base, links, facts = ui
    page = _page(browser)
    page.goto(links["report"])
    frame = page.frame_locator("iframe")
    players = frame.locator("audio")
    players.first.wait_for()
    assert players.first.evaluate("a => new Promise(done => a.readyState >= 1 ? done(a.duration)"
                                  " : a.addEventListener('loadedmetadata', () => done(a.duration)))") > 0
    trial_links = frame.locator("table a")
    assert trial_links.count() >= len(facts["runs"]) - len(facts["pruned"])
    # In MLflow's sandboxed preview a link cannot open: the page says so and stays (it used to go blank).
    frame.locator("#framed").wait_for()
    trial_links.first.click()
    frame.locator("table").wait_for()
    assert "sandboxed frame" in frame.locator("#framed").inner_text()
    page.context.close()
    # Downloaded and opened in its own tab, pointed at this server, a trial link opens that trial.
    own = _page(browser)
    own.goto(facts["report_file"].as_uri())
    field = own.locator("#ui-base")
    assert field.input_value() == facts["ui_base"]
    field.fill(base)  # typed: the links follow as it is typed
    own.locator("table a").first.click()
    own.wait_for_url(re.compile(re.escape(base) + r"/#/experiments/\d+/runs/[0-9a-f]{32}.*"))
    own.get_by_text("Parent run", exact=True).wait_for()
    own.context.close()
