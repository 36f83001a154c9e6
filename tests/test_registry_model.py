"""The registered model works outside this repository: loaded in a process where ampstudy's packages
cannot be imported, served over HTTP by `mlflow models serve`, and refusing crafted model files."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import soundfile as sf
import torch
from mlflow.exceptions import MlflowException

from ampmodel.streaming import render
from ampmodel.wavenet import WaveNet
from ampstudy.cli import main
from foundation.errors import AmpStudyError
from studies.promote import ALIAS, promote
from studies.spec import load_study_spec
from tests.conftest import global_mlflow_uris_restored, mlflow_process
from training import tracking
from training.mlflow_model import log_amp_model
from training.model_io import load_model, resolve_model, save_model
from training.run_config import run_config_from_mapping

MODEL = "bassman-wavenet"
KNOBS = {"volume": 0.8, "treble": 0.7, "bass": 0.3, "middle": 0.6}
BLOCKED = ("ampstudy", "ampmodel", "datamodules", "studies", "foundation", "training")
# Put first on PYTHONPATH, this makes every import of ampstudy's own packages fail in that process
# and its children (the model server's workers): the model must bring all it needs.
SITECUSTOMIZE = f'''import sys

class _BlockAmpstudy:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError("blocked: this process must not import " + name)

sys.meta_path.insert(0, _BlockAmpstudy())
'''
LOAD_AND_PREDICT = f'''import json, sys
import mlflow, numpy as np
try:
    import ampmodel
    sys.exit("the import blocker is not active")
except ImportError:
    pass
amp = mlflow.pyfunc.load_model(sys.argv[1])
audio = np.load(sys.argv[2])
np.save(sys.argv[3], amp.predict(audio, params=json.loads(sys.argv[4])))
try:
    amp.predict(audio)
except Exception as err:
    print("without knobs:", err)
print("imported:", sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r}))
'''


def di_signal(samples: int = 4000) -> np.ndarray:
    t = np.arange(samples) / 16000
    tone = 0.4 * np.sin(2 * np.pi * 110 * t) * np.exp(-4 * t)
    return (tone + 0.05 * np.random.default_rng(0).standard_normal(samples)).astype(np.float32)


@pytest.fixture
def champion(in_study_dir):
    """models:/ URI of the champion of the finished study's registry (promoting if no test did yet)."""
    client = tracking.client(tracking.default_tracking_uri())
    try:
        client.get_model_version_by_alias(MODEL, ALIAS)
    except MlflowException:
        promote(load_study_spec(in_study_dir["path"]))
    return f"models:/{MODEL}@{ALIAS}"


@pytest.fixture
def outside_env(tmp_path):
    """Environment for a process that cannot import ampstudy but sees the same MLflow store."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {**os.environ, "PYTHONPATH": str(blocker), "MLFLOW_TRACKING_URI": tracking.default_tracking_uri(),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # uvicorn


def ampstudy_render(model_uri: str, audio: np.ndarray, folder: Path) -> np.ndarray:
    sf.write(folder / "di.wav", audio, 16000, subtype="FLOAT")
    knobs = [arg for name, value in KNOBS.items() for arg in (f"--{name}", str(value))]
    assert main(["render", model_uri, str(folder / "di.wav"), str(folder / "amp.wav"), *knobs]) == 0
    return sf.read(folder / "amp.wav", dtype="float32")[0]


def test_champion_loads_and_predicts_without_ampstudy(champion, outside_env, tmp_path):
    audio = di_signal()
    np.save(tmp_path / "in.npy", audio)
    done = subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT, champion, str(tmp_path / "in.npy"),
                           str(tmp_path / "out.npy"), json.dumps(KNOBS)],
                          env=outside_env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "imported: []" in done.stdout
    assert "without knobs: this model follows the amp's knobs: give params ['volume', 'treble', 'bass', " \
           "'middle'] (positions: volume 0..1" in done.stdout
    loaded = resolve_model(champion)
    expected = render(loaded.net, audio, list(KNOBS.values()))
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-5, rtol=0)


def test_champion_describes_itself_in_the_registry(champion):
    client = tracking.client(tracking.default_tracking_uri())
    version = client.get_model_version_by_alias(MODEL, ALIAS)
    text = version.description
    for expected in (f"`{version.tags['study']}`, trial {version.tags['trial']}", "channels", "receptive field",
                     "test ESR", "knob settings no trial saw", "MACs/sample", "real-time factor",
                     version.tags["data_hash"], f"ampstudy render models:/{MODEL}@champion di.wav amp.wav --volume",
                     "mlflow.pyfunc.load_model", "mlflow models serve"):
        assert expected in text, expected
    # trained at the tiny study's 2 listed settings: the version says so, in its tags and in words
    assert version.tags["knobs_trained"].startswith("2 listed knob setting(s) only: volume 0.5"), version.tags
    assert "trained on 2 listed knob setting(s) only" in text and "--allow-untrained-knobs" in text
    info = mlflow.models.get_model_info(champion)
    assert [(p.name, p.default) for p in info.signature.params.params] == [(k, None) for k in KNOBS]
    assert info.signature.inputs.inputs[0].name == "audio"
    assert info.metadata["knobs"] == {k: [0.0, 1.0] for k in KNOBS}


def test_served_champion_answers_like_ampstudy_render(champion, outside_env, tmp_path):
    audio = di_signal()
    expected = ampstudy_render(champion, audio, tmp_path)
    command = ["models", "serve", "-m", champion, "--env-manager", "local"]
    with mlflow_process(command, outside_env, tmp_path) as url:
        status, reply = _post(f"{url}/invocations", {"inputs": audio.tolist(), "params": KNOBS})
        assert status == 200, reply
        np.testing.assert_allclose(np.asarray(reply["predictions"], np.float32), expected, atol=1e-5, rtol=0)
        status, reply = _post(f"{url}/invocations", {"inputs": audio.tolist()})
        assert status == 400 and "give params ['volume', 'treble', 'bass', 'middle']" in reply["message"]
        # The rules of `ampstudy render`, in its words: a knob named, audio within full scale.
        status, reply = _post(f"{url}/invocations", {"inputs": audio.tolist(), "params": {**KNOBS, "bass": 1.5}})
        assert status == 400 and "bass: knob position 1.5 is outside 0..1" in reply["message"], reply
        status, reply = _post(f"{url}/invocations", {"inputs": (10 * audio).tolist(), "params": KNOBS})
        assert status == 400 and "exceeds full scale 1" in reply["message"], reply


def test_the_served_model_answers_concurrent_requests_each_with_its_own_stream(champion, outside_env, tmp_path):
    """MLflow's scoring server predicts in threads: a stream state shared between calls mixed them up."""
    audio = np.tile(di_signal(16000), 3)  # 12 streaming blocks: long enough for requests to overlap
    settings = [{**KNOBS, "volume": v} for v in (0.2, 0.4, 0.6, 0.8, 1.0, 0.3)]
    net = resolve_model(champion).net
    expected = [render(net, audio, list(knobs.values())) for knobs in settings]
    command = ["models", "serve", "-m", champion, "--env-manager", "local"]
    with mlflow_process(command, outside_env, tmp_path) as url:
        with concurrent.futures.ThreadPoolExecutor(len(settings)) as pool:
            replies = list(pool.map(lambda knobs: _post(f"{url}/invocations", {"inputs": audio.tolist(),
                                                                                 "params": knobs}), settings * 2))
    for (status, reply), want in zip(replies, expected * 2):
        assert status == 200, reply
        np.testing.assert_allclose(np.asarray(reply["predictions"], np.float32), want, atol=1e-5, rtol=0)


def test_the_registered_model_answers_at_an_untrained_setting_and_logs_why(champion, caplog):
    amp = mlflow.pyfunc.load_model(champion)
    with caplog.at_level(logging.WARNING, logger="ampstudy.registered_model"):
        amp.predict(di_signal(800), params=KNOBS)  # a trained setting: nothing to say
        assert not caplog.records
        out = amp.predict(di_signal(800), params={**KNOBS, "volume": 0.2})
    assert np.isfinite(out).all() and len(out) == 800
    [record] = caplog.records
    assert "trained at 2 listed knob setting(s) only" in record.getMessage()
    assert "extrapolation nobody measured" in record.getMessage()


def test_the_registered_model_limits_a_request_and_runs_on_one_thread(champion):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        amp = mlflow.pyfunc.load_model(champion, model_config={"max_request_seconds": 0.1})
        assert torch.get_num_threads() == 1  # streaming is latency-bound (model_config "threads", default 1)
        amp.predict(di_signal(1600), params=KNOBS)  # 0.1 s at 16 kHz: at the limit
        with pytest.raises(MlflowException, match=r"audio: 0.1 s in one request exceeds the limit of 0.1 s \(1600 "
                                                  r"samples at 16000 Hz\); render a long file with `ampstudy render"):
            amp.predict(di_signal(1601), params=KNOBS)
        torch.set_num_threads(2)
        mlflow.pyfunc.load_model(champion, model_config={"threads": 0})
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_render_from_a_tracking_server_leaves_no_temporary_copy(logged_model, tmp_path, monkeypatch):
    """A model pulled from an MLflow server is downloaded; the copy must not outlive the render."""
    model_dir, _, store = logged_model
    # A copy of an initialised store: a fresh one would spend seconds creating its tables.
    shutil.copy2(store.removeprefix("sqlite:///"), tmp_path / "server.db")
    command = ["server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
               "--artifacts-destination", str(tmp_path / "served-artifacts"), "--workers", "1"]
    with mlflow_process(command, dict(os.environ), tmp_path) as url, global_mlflow_uris_restored():
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        client = tracking.client(url)
        run = client.create_run(tracking.ensure_experiment("served", url))
        client.log_artifacts(run.info.run_id, str(model_dir), "model")
        mlflow.register_model(log_amp_model(run.info.run_id, model_dir), "served-amp")
        scratch = tmp_path / "scratch"
        scratch.mkdir()
        monkeypatch.setattr("tempfile.tempdir", str(scratch))
        for uri in (f"runs:/{run.info.run_id}/model", "models:/served-amp/1"):
            ampstudy_render(uri, di_signal(800), tmp_path)
            assert not list(scratch.iterdir()), f"{uri} left {list(scratch.iterdir())}"


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def test_a_model_trained_at_fixed_knobs_takes_audio_only(logged_model, tmp_path):
    cfg = run_config_from_mapping({"model": {"channels": 3, "dilations": "1..4"}})
    net = WaveNet(cfg.model)
    model_dir = save_model(tmp_path / "model", net, cfg, {"sample_rate": 16000, "settings": [KNOBS]})
    uri = logged_model[2]
    with global_mlflow_uris_restored():
        client = tracking.client(uri)
        run = client.create_run(tracking.ensure_experiment("fixed-knobs", uri))
        amp = mlflow.pyfunc.load_model(log_amp_model(run.info.run_id, model_dir))
    assert amp.metadata.get_params_schema() is None
    audio = di_signal(1000)
    np.testing.assert_allclose(amp.predict(audio), render(net, audio), atol=1e-6, rtol=0)


def test_models_shipped_with_different_wavenet_code_load_side_by_side(logged_model, tmp_path, monkeypatch):
    """Each model imports its own copy of the WaveNet code, not the copy of the first model loaded."""
    import ampmodel
    from training import mlflow_model

    changed = shutil.copytree(Path(ampmodel.__file__).parent, tmp_path / "ampmodel",
                              ignore=shutil.ignore_patterns("__pycache__"))
    with open(changed / "streaming.py", "a") as source:  # a later version: twice the output
        source.write("\n_render = render\n\n\ndef render(*args, **kwargs):\n    return 2 * _render(*args, **kwargs)\n")
    ship = mlflow_model.ship_ampmodel
    monkeypatch.setattr(mlflow_model, "ship_ampmodel", lambda into: ship(into, source=changed))
    model_dir, first, uri = logged_model
    with global_mlflow_uris_restored():
        client = tracking.client(uri)
        second = log_amp_model(client.create_run(tracking.ensure_experiment("crafted", uri)).info.run_id, model_dir)
        audio = di_signal(500)
        old = mlflow.pyfunc.load_model(str(first)).predict(audio, params=KNOBS)
        new = mlflow.pyfunc.load_model(second).predict(audio, params=KNOBS)
    np.testing.assert_allclose(new, 2 * old, rtol=1e-6, atol=0)


# --- crafted model files: refused by ampstudy's loader and by the registered model's own code ---

class _Payload:
    """Unpickling this runs os.mkdir(path): proof that a loader executed pickled code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


@pytest.fixture(scope="module")
def logged_model(tmp_path_factory, finished_study):
    """(model directory, local copy of its MLflow model, tracking URI) of a tiny conditioned WaveNet,
    logged into the finished study's store (a new SQLite store would spend seconds creating tables)."""
    root = tmp_path_factory.mktemp("registry-model")
    cfg = run_config_from_mapping({"model": {"channels": 4, "dilations": "1..8", "conditioning": "film",
                                             "film_hidden": 4}})
    model_dir = save_model(root / "model", WaveNet(cfg.model), cfg, {"sample_rate": 16000, "settings": [KNOBS]})
    uri = f"sqlite:///{finished_study['root'] / tracking.TRACKING_DIR / 'mlflow.db'}"
    with global_mlflow_uris_restored():
        client = tracking.client(uri)
        run = client.create_run(tracking.ensure_experiment("crafted", uri))
        model_uri = log_amp_model(run.info.run_id, model_dir)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(root / "mlflow")))
    return model_dir, local, uri


def _edit_config(**model):
    def edit(directory: Path) -> None:
        meta = json.loads((directory / "config.json").read_text())
        meta["run_config"]["model"].update(model)
        (directory / "config.json").write_text(json.dumps(meta))
    return edit


def _pickled_weights(directory: Path) -> None:
    state = torch.load(directory / "state_dict.pt", weights_only=True)
    torch.save({**state, "payload": _Payload(str(directory / "payload-ran"))}, directory / "state_dict.pt")


CRAFTED = {
    "oversized channels": (_edit_config(channels=100000), "run_config.model.channels: 100000 is above the limit 256"),
    "too many layers": (_edit_config(dilations=[1] * 1000), "model.dilations: 1000 layers is above the limit 64"),
    "huge dilation": (_edit_config(dilations=[2**30]), "model.dilations: 1073741824 is above the limit 65536"),
    "huge kernel": (_edit_config(kernel_size=4096), "model.kernel_size: 4096 is above the limit 16"),
    "size not an integer": (_edit_config(channels="4"), "model.channels: expected an integer, got '4'"),
    "unknown setting": (_edit_config(chanels=4), "model.chanels: unknown"),
    "pickled payload": (_pickled_weights, "state_dict.pt: refused: not a plain tensor file"),
    "not json": (lambda d: (d / "config.json").write_text("{'channels': 4"), "config.json: not "),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_model_files_are_refused_in_one_line(logged_model, tmp_path, case):
    model_dir, mlflow_model, _ = logged_model
    craft, message = CRAFTED[case]
    ours = shutil.copytree(model_dir, tmp_path / "ours")
    craft(ours)
    with pytest.raises(AmpStudyError) as refused:
        load_model(ours)
    shipped = shutil.copytree(mlflow_model, tmp_path / "shipped")
    craft(shipped / "artifacts" / "model_dir")
    with pytest.raises(MlflowException) as refused_shipped:
        mlflow.pyfunc.load_model(str(shipped))
    for error in (str(refused.value), refused_shipped.value.message):
        assert message in error and "\n" not in error, error
    assert not list(tmp_path.rglob("payload-ran"))


def test_loading_the_model_code_raises_no_warning_about_type_hints():
    """MLflow wraps a PythonModel's predict for type-hint validation and warns, once per process that
    defines the class (every trial, every load), when there are none; the model checks its input
    itself, so it opts out and nothing is said."""
    code = ("import runpy, warnings\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    runpy.run_path('training/amp_pyfunc_model.py')\n"
            "print([str(w.message) for w in caught if 'type hint' in str(w.message)])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]
