"""`ampstudy export`: a NAM-family model at a knob setting, as a .nam file that neural-amp-modeler's own
loader plays like our render (every NAM preset; a FiLM model at three settings), whose `loudness` and
`gain` are what neural-amp-modeler's own code computes for it, with the knob setting and test ESRs the
model's MLflow run knows; one-line refusals; an exportable-only study whose champion `promote` tells
how to export, with its test ESR."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ampmodel.config import PRESETS
from ampmodel.streaming import render
from ampstudy.cli import main
from foundation.errors import ConfigError
from studies.spec import load_study_spec, study_spec_from_mapping
from tests.conftest import TINY_STUDY, write_study_file
from tests.nam_0_12 import run_under_nam_0_12
from training import nam_export
from training.model_io import resolve_model, save_model
from training.nam_export import export_nam, known_test_esrs
from training.run_config import run_config_from_mapping

init_from_nam = pytest.importorskip("nam.models", reason="`make test` installs neural-amp-modeler").init_from_nam
from nam.models.base import _Base as NamBase  # noqa: E402  (holds NAM's loudness test signal and formulas)

SETTINGS = [{"volume": 0.2, "treble": 0.9, "bass": 0.1, "middle": 0.5},
            {"volume": 0.8, "treble": 0.6, "bass": 0.5, "middle": 0.5},
            {"volume": 1.0, "treble": 0.0, "bass": 1.0, "middle": 0.3}]
DATA_INFO = {"sample_rate": 16000, "input_full_scale_volts": 1.0, "target_scale_volts": 20.0,
             "settings": [{**SETTINGS[1], "group": "train"}]}  # a model at fixed knobs plays this one
KNOB_DATA_INFO = {**DATA_INFO, "settings": [{**setting, "group": "train"} for setting in SETTINGS]}  # a knob model's


def guitar(samples: int = 6000) -> np.ndarray:
    t = np.arange(samples) / 16000
    tone = 0.5 * np.sin(2 * np.pi * 82.4 * t) * np.exp(-3 * t) + 0.3 * np.sin(2 * np.pi * 329.6 * t)
    return (tone + 0.05 * np.random.default_rng(0).standard_normal(samples)).astype(np.float32)


def saved_model(directory: Path, model: dict, seed: int = 0) -> Path:
    """A NAM-family model directory with weights moved off their init and outputs of order 1."""
    cfg = run_config_from_mapping({"model": model})
    torch.manual_seed(seed)
    from ampmodel.loading import build_wavenet

    net = build_wavenet(cfg.model)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
        net.heads[-1].weight.mul_(1 / net.head_scale)  # as training does: NAM's 0.02 output scale undone
    return save_model(directory, net, cfg, DATA_INFO if cfg.model.conditioning == "none" else KNOB_DATA_INFO)


@pytest.fixture
def short_loudness_signal(monkeypatch):
    """NAM's loudness test signal cut to its first 1000 samples, for our export and NAM's computation
    alike: the same comparison at a fraction of the cost (nam-standard plays 1 s twelve times otherwise)."""
    short = nam_export.loudness_signal()[:1000].copy()
    monkeypatch.setattr(nam_export, "loudness_signal", lambda: short)
    monkeypatch.setattr(NamBase, "_metadata_loudness_x", classmethod(lambda cls: torch.from_numpy(short)))


def nam_loudness(path: Path, gain: bool = True) -> tuple[float, float | None]:
    """`loudness` (dB) and `gain` as neural-amp-modeler's exporter computes them for the model in `path`."""
    model = init_from_nam(json.loads(path.read_text())).eval()
    with torch.no_grad():
        return model._metadata_loudness(), (float(model._metadata_gain()) if gain else None)


def assert_nams_loudness(meta: dict, path: Path, gain: bool = True) -> None:
    loudness, nam_gain = nam_loudness(path, gain)
    assert meta["loudness"] == pytest.approx(loudness, abs=0.01)  # dB
    assert 0 <= meta["gain"] <= 1
    if gain:
        assert meta["gain"] == pytest.approx(nam_gain, abs=1e-3)


def played_by_nam(path: Path, audio: np.ndarray) -> np.ndarray:
    document = json.loads(path.read_text())
    model = init_from_nam(document).eval()
    with torch.no_grad():
        return model(torch.from_numpy(audio)[None], pad_start=True)[0].numpy()  # NAM pads with rf-1 zeros too


@pytest.mark.parametrize("preset", ["nam-standard", "nam-lite", "nam-feather", "nam-nano", "nam-a2"])
def test_every_nam_preset_plays_in_nam_as_in_our_render(preset, tmp_path, short_loudness_signal):
    model_dir = saved_model(tmp_path / "model", {"preset": preset})
    done = export_nam(str(model_dir), tmp_path / "amp.nam", dict.fromkeys(SETTINGS[0]))
    audio = guitar()
    ours = render(resolve_model(str(model_dir)).net, audio)
    assert np.abs(ours).max() > 0.2  # a real signal, so 1e-5 is a strict match
    np.testing.assert_allclose(played_by_nam(done.path, audio), ours, rtol=0, atol=1e-5)
    document = json.loads(done.path.read_text())
    assert document["version"] == "0.7.0" and document["architecture"] == "WaveNet"
    assert document["sample_rate"] == 16000 and document["config"]["head_scale"] == PRESETS[preset].head_scale
    meta = document["metadata"]
    assert meta["name"] == "amp" and meta["modeled_by"] == "ampstudy" and meta["gear_type"] == "preamp"
    assert meta["knobs"] == SETTINGS[1]  # trained at fixed knobs: that setting is what the file plays
    assert meta["input_level_dbu"] == pytest.approx(20 * math.log10(1 / math.sqrt(2) / 0.7746), abs=0.01)
    assert not [k for k in meta if k.startswith("test_esr")]  # a model directory alone does not know them; no nulls
    assert_nams_loudness(meta, done.path, gain=preset == "nam-nano")  # NAM's gain: 11 runs; one preset shows it


def test_the_format_for_older_plugins_plays_in_nam_0_12_as_in_our_render(tmp_path, capsys):
    """`--nam-format 0.5` (what neural-amp-modeler 0.12 wrote; plugins older than NeuralAmpModelerCore
    0.4.1 read only that) loads in 0.12.3's loader and plays what ours does; 0.13's loader refuses it."""
    model_dir = saved_model(tmp_path / "model", {"preset": "nam-feather", "activation": "gated", "conditioning": "film",
                                                 "film_hidden": 8})
    knobs = SETTINGS[2]
    args = [arg for name, value in knobs.items() for arg in (f"--{name}", str(value))]
    assert main(["export", str(model_dir), str(tmp_path / "old.nam"), *args, "--nam-format", "0.5"]) == 0
    assert ".nam format 0.5" in capsys.readouterr().out
    document = json.loads((tmp_path / "old.nam").read_text())
    assert document["version"] == "0.5.4" and document["config"]["layers"][0]["gated"] is True
    audio = guitar(3000)
    np.save(tmp_path / "audio.npy", audio)
    played = run_under_nam_0_12("""
import json, sys, numpy as np, torch
import nam
from nam.models import init_from_nam
model = init_from_nam(json.loads(open(sys.argv[1]).read())).eval()
with torch.no_grad():
    y = model(torch.from_numpy(np.load(sys.argv[2]))[None], pad_start=True)[0].numpy()
print(json.dumps({"version": nam.__version__, "y": y.tolist()}))
""", str(tmp_path / "old.nam"), str(tmp_path / "audio.npy"))
    assert played["version"] == "0.12.3"
    ours = render(resolve_model(str(model_dir)).net, audio, list(knobs.values()))
    np.testing.assert_allclose(np.array(played["y"], dtype=np.float32), ours, rtol=0, atol=1e-5)
    with pytest.raises(KeyError, match="head"):  # 0.13 reads 0.7 only: the reason 0.7 is the default
        init_from_nam(document)


def test_nams_a2_refuses_the_older_format_in_one_line(tmp_path, capsys):
    model_dir = saved_model(tmp_path / "model", {"preset": "nam-a2-channels3"})
    assert main(["export", str(model_dir), str(tmp_path / "a2.nam"), "--nam-format", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--nam-format 0.5: '0.5' cannot hold NAM's A2" in err and "use '0.7'" in err and err.count("\n") == 1
    assert not (tmp_path / "a2.nam").exists()


def test_a_film_model_plays_in_nam_at_each_knob_setting(tmp_path, capsys, short_loudness_signal):
    model_dir = saved_model(tmp_path / "model", {"preset": "nam-feather", "conditioning": "film", "film_hidden": 8})
    net, audio = resolve_model(str(model_dir)).net, guitar()
    outputs = []
    for i, knobs in enumerate(SETTINGS):
        args = [arg for name, value in knobs.items() for arg in (f"--{name}", str(value))]
        assert main(["export", str(model_dir), str(tmp_path / f"s{i}.nam"), *args, "--name", f"setting {i}"]) == 0
        assert f"s{i}.nam: 'setting {i}' at volume {knobs['volume']:g}" in capsys.readouterr().out
        ours = render(net, audio, list(knobs.values()))
        np.testing.assert_allclose(played_by_nam(tmp_path / f"s{i}.nam", audio), ours, rtol=0, atol=1e-5)
        meta = json.loads((tmp_path / f"s{i}.nam").read_text())["metadata"]
        assert meta["knobs"] == knobs and meta["name"] == f"setting {i}" and meta["knob_conditioning"] == "film"
        assert_nams_loudness(meta, tmp_path / f"s{i}.nam", gain=False)
        outputs.append(ours)
    assert min(np.abs(a - b).max() for a, b in zip(outputs, outputs[1:])) > 1e-3  # the knobs matter


SMALL_FILM = {"family": "nam", "channels": 2, "array_channels": [2], "dilations": "1..8", "kernel_size": 3,
              "activation": "tanh", "conditioning": "film", "film_hidden": 4}


def test_exports_at_two_knob_settings_carry_nams_loudness_and_gain_and_their_own_test_esr(study_workdir):
    """NAM's full loudness test signal, a run that logged its per-setting test table: each file has the
    loudness and gain NAM's own exporter computes for it, its knob setting and its setting's test ESR."""
    from training import artifacts, tracking

    client = tracking.client()
    run_id = client.create_run(tracking.ensure_experiment("export")).info.run_id
    client.log_artifacts(run_id, str(saved_model(study_workdir / "model", SMALL_FILM)), "model")
    client.log_metric(run_id, "test_esr_tail_aware", 0.031)
    artifacts.log_settings_table(client, run_id, [{"setting": i, **knobs, "group": "test", "test_esr": esr}
                                                  for i, (knobs, esr) in enumerate(zip(SETTINGS, (0.012, 0.047)))],
                                 "test")
    spec, metas = f"runs:/{run_id}/model", []
    for i, (knobs, esr) in enumerate(zip(SETTINGS, (0.012, 0.047))):
        done = export_nam(spec, study_workdir / f"s{i}.nam", knobs)
        meta = json.loads(done.path.read_text())["metadata"]
        assert meta["knobs"] == knobs and meta["test_esr_at_knobs"] == esr and meta["test_esr_overall"] == 0.031
        assert (done.loudness, done.gain, done.test_esr_at_knobs) == (meta["loudness"], meta["gain"], esr)
        assert 0 < meta["gain"] < 1  # a value between NAM's clip limits, so the formula is really compared
        assert_nams_loudness(meta, done.path, gain=i == 0)  # NAM's gain plays its signal 11 times: once is enough
        metas.append(meta)
    assert abs(metas[0]["loudness"] - metas[1]["loudness"]) > 0.1  # each file has its own setting's loudness
    assert known_test_esrs(spec, SETTINGS[2]) == (0.031, None)  # a setting the table lacks: only the overall


def test_without_nams_test_signal_an_export_has_no_loudness_and_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(nam_export, "nam_loudness_wav", lambda: None)  # as without neural-amp-modeler installed
    done = export_nam(str(saved_model(tmp_path / "model", {"preset": "nam-nano"})), tmp_path / "amp.nam", {})
    meta = json.loads(done.path.read_text())["metadata"]
    assert "loudness" not in meta and "gain" not in meta and done.loudness is None
    assert "amp.nam: no 'loudness'/'gain' metadata" in caplog.text and "cannot normalise" in caplog.text


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A FiLM NAM-family model and a paper-family one, saved once for the refusal tests."""
    root = tmp_path_factory.mktemp("export-models")
    paper = run_config_from_mapping({"model": {"channels": 2, "dilations": "1..4"}})
    from ampmodel.loading import build_wavenet

    return {"nam": saved_model(root / "nam", {"preset": "nam-nano", "conditioning": "film"}),
            "paper": save_model(root / "paper", build_wavenet(paper.model), paper, DATA_INFO)}


@pytest.mark.parametrize("case, message", [
    ("paper family", "a 'paper'-family WaveNet cannot be written as a .nam file; the families that export are: nam"),
    ("no knobs", "this model follows the amp's knobs: give --treble --bass --middle"),
    ("NaN knob", "volume: knob position nan is outside 0..1"),
    ("knob too high", "bass: knob position 1.5 is outside 0..1"),
    ("not .nam", "amp.wav: NAM's plugin opens files ending in .nam; name the output e.g. amp.nam"),
    ("no folder", "no-such-dir: no such directory"),
    ("a folder", "d.nam: is a directory; give a file name ending in .nam"),
])
def test_export_refuses_in_one_line(case, message, models, tmp_path, capsys):
    (tmp_path / "d.nam").mkdir()
    model, out, knobs = str(models["nam"]), str(tmp_path / "amp.nam"), _knobs()
    if case == "paper family":
        model = str(models["paper"])
    elif case == "no knobs":
        knobs = ["--volume", "0.5"]
    elif case in ("NaN knob", "knob too high"):
        knobs = _knobs(volume="nan") if case == "NaN knob" else _knobs(bass="1.5")
    else:
        out = str(tmp_path / {"not .nam": "amp.wav", "no folder": "no-such-dir/amp.nam", "a folder": "d.nam"}[case])
    assert main(["export", model, out, *knobs]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.nam"]  # nothing written, not even half a file


def _knobs(**given: str) -> list[str]:
    values = {"volume": "0.5", "treble": "0.5", "bass": "0.5", "middle": "0.5", **given}
    return [arg for name, value in values.items() for arg in (f"--{name}", value)]


def test_exportable_only_studies_refuse_families_that_do_not_export():
    base = {"model": {"preset": "nam-nano"}}
    spec = study_spec_from_mapping({"name": "s", "exportable_only": True, "budget": {"n_trials": 1}, "base": base,
                                    "space": {"model": {"array_channels": {"choices": [1, 2]}}}})
    assert spec.options.exportable_only and spec.base.model.family == "nam"
    for table, wrong in [({"base": {}}, "paper"),
                         ({"base": base, "space": {"model": {"family": {"choices": ["nam", "paper"]}}}}, "paper")]:
        with pytest.raises(ConfigError, match=f"exportable_only: the study would train family {wrong}"):
            study_spec_from_mapping({"name": "s", "exportable_only": True, "budget": {"n_trials": 1}, **table})


NAM_BASE = '''[base.model]
family = "nam"
channels = 4
array_channels = [2]
dilations = "(1..8)x2"
kernel_size = 2
conditioning = "film"
film_hidden = 4
'''
NAM_SPACE = '''[space.model]
array_channels = { choices = [2, 3] }
activation = { choices = ["gated", "tanh"] }
'''


def test_an_exportable_study_promotes_a_champion_that_exports_with_its_test_esr(study_workdir, study_data_dir,
                                                                               capsys, short_loudness_signal):
    from studies.promote import promote
    from studies.runner import run_study

    text = TINY_STUDY.read_text()
    base_model = text[text.index("[base.model]"):text.index("[base.train]")]
    space_model = text[text.index("[space.model]"):text.index("[space.train]")]
    path = write_study_file(study_workdir / "nam.toml", study_data_dir, name="nam-tiny", n_trials=1,
                            replace={base_model: NAM_BASE + "\n", space_model: NAM_SPACE + "\n",
                                     'registered_model = "bassman-wavenet"': 'exportable_only = true\n'
                                                                             'registered_model = "nam-amp"'})
    spec = load_study_spec(path)
    run_study(spec, report=False)
    result = promote(spec)
    out = capsys.readouterr().out
    command = out.split("play the champion in Neural Amp Modeler (one .nam file per knob setting):\n  ")[1]
    command = command.split("\n")[0]
    assert command.startswith("ampstudy export models:/nam-amp@champion nam-amp.nam --volume ")
    assert main(command.split()[1:]) == 0  # the printed command works as printed
    meta = json.loads((study_workdir / "nam-amp.nam").read_text())["metadata"]
    assert meta["test_esr_overall"] == pytest.approx(result.test_esr)  # the tail-aware test ESR promote measured
    # promote logs the per-setting test table to the trial's run; the tiny study tests its two settings
    # (a time split), so the printed setting has its own number
    assert 0 < meta["test_esr_at_knobs"] < float("inf")
    assert_nams_loudness(meta, study_workdir / "nam-amp.nam", gain=False)
    loaded, audio = resolve_model("models:/nam-amp@champion"), guitar(3000)
    ours = render(loaded.net, audio, [meta["knobs"][k] for k in ("volume", "treble", "bass", "middle")])
    np.testing.assert_allclose(played_by_nam(study_workdir / "nam-amp.nam", audio), ours, rtol=0, atol=1e-5)
    import mlflow  # the registered model's shipped copy of ampmodel runs the nam family too

    registered = mlflow.pyfunc.load_model("models:/nam-amp@champion")
    np.testing.assert_allclose(registered.predict(audio, params=meta["knobs"]), ours, rtol=0, atol=1e-6)


def test_a_setting_the_model_was_not_trained_at_is_refused_unless_allowed(tmp_path, capsys, caplog,
                                                                          short_loudness_signal):
    """Issue 21 #4: a model trained at listed settings knows only those; elsewhere render and export
    refuse (exit 2, one line naming the nearest trained setting and the flag), the flag lets them go on
    with a warning, and the .nam says what the model was trained on."""
    model_dir = saved_model(tmp_path / "model", SMALL_FILM)
    near = {**SETTINGS[1], "volume": SETTINGS[1]["volume"] + 0.04}  # within half a dial number: trained
    far = {"volume": 0.5, "treble": 0.5, "bass": 0.5, "middle": 0.5}  # 0.3 from the nearest trained setting
    def as_args(knobs: dict) -> list[str]:
        return [arg for name, value in knobs.items() for arg in (f"--{name}", str(value))]

    assert main(["export", str(model_dir), str(tmp_path / "near.nam"), *as_args(near)]) == 0
    assert main(["export", str(model_dir), str(tmp_path / "far.nam"), *as_args(far)]) == 2
    err = capsys.readouterr().err
    assert "trained at 3 listed knob setting(s) only" in err and "--allow-untrained-knobs" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "far.nam").exists()
    wav = tmp_path / "di.wav"
    sf.write(wav, guitar(), 16000, subtype="FLOAT")
    assert main(["render", str(model_dir), str(wav), str(tmp_path / "far.wav"), *as_args(far)]) == 2
    assert "--allow-untrained-knobs" in capsys.readouterr().err and not (tmp_path / "far.wav").exists()
    with caplog.at_level(logging.WARNING, logger="ampstudy"):
        assert main(["render", str(model_dir), str(wav), str(tmp_path / "far.wav"), *as_args(far),
                     "--allow-untrained-knobs"]) == 0
        assert main(["export", str(model_dir), str(tmp_path / "far.nam"), *as_args(far),
                     "--allow-untrained-knobs"]) == 0
    assert sum("extrapolation nobody measured" in r.getMessage() for r in caplog.records) == 2
    meta = json.loads((tmp_path / "far.nam").read_text())["metadata"]
    assert meta["knobs_trained"].startswith("3 listed knob setting(s) only: volume 0.2, treble 0.9")
