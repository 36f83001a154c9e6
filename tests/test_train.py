"""train(cfg) end to end on a tiny real SPICE dataset, into a temporary real MLflow store."""

import json
import math
import os
import re

import mlflow
import numpy as np
import pytest
import soundfile as sf
import torch

from ampmodel.metrics import tail_aware_esr
from ampstudy.cli import main
from foundation.errors import TrainingDiverged
from training.model_io import load_model, resolve_model
from training.run_config import run_config_from_mapping
from training.train import train

TINY = {
    "experiment": "tiny",
    "data": {"knobs": {"settings": [{"volume": 0.9, "treble": 0.9}, {"volume": 0.4, "treble": 0.1}]},
             "audio": {"corpus_seconds": 0.8, "region_seconds": 0.1, "region_split": [0.6, 0.2, 0.2]},
             "simulation": {"chunk_seconds": 0.4, "warmup_seconds": 0.05}},
    "model": {"channels": 4, "dilations": "1..16", "conditioning": "film", "film_hidden": 4},
    "train": {"max_epochs": 2, "batch_size": 4, "segment_samples": 512, "limit_train_batches": 4,
              "learning_rate": 0.005, "audio_seconds": 0.2},
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    return {"uri": f"sqlite:///{root / 'mlflow.db'}", "data": str(root / "data"), "root": root}


def tiny_config(store, **train_overrides):
    table = json.loads(json.dumps(TINY))
    table["data"]["data_dir"] = store["data"]
    table["train"].update(train_overrides)
    return run_config_from_mapping(table)


@pytest.fixture(scope="module")
def trained(store):
    return train(tiny_config(store), tracking_uri=store["uri"], evaluate_test=True, progress=False,
                 work_dir=store["root"] / "work")


def test_run_logs_metrics_cost_audio_and_model(trained, store):
    assert trained.run_id and math.isfinite(trained.val_esr_tail_aware) and trained.val_esr_tail_aware > 0
    assert trained.test_esr_tail_aware is not None and math.isfinite(trained.test_esr_tail_aware)
    client = mlflow.tracking.MlflowClient(tracking_uri=store["uri"])
    run = client.get_run(trained.run_id)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for name in ("val_esr_tail_aware", "best_val_esr_tail_aware", "test_esr_tail_aware", "cost_params",
                 "cost_macs_per_sample", "cost_rtf", "best_val_esr_worst_scored_setting", "samples_trained"):
        assert name in metrics, name
    for former in ("val_esr", "best_val_esr", "test_esr"):  # these names meant other numbers in older runs
        assert former not in metrics, former
    assert metrics["best_val_esr_tail_aware"] == pytest.approx(trained.val_esr_tail_aware)
    assert run.data.params["model.channels"] == "4"
    assert int(run.data.params["model.receptive_field"]) == 1 + 2 * 31
    assert run.data.tags["dataset_hash"]
    audio = [f.path for f in client.list_artifacts(trained.run_id, "audio")]
    assert audio, "no audio examples logged"
    wavs = [f.path for f in client.list_artifacts(trained.run_id, audio[0])]
    assert {p.rsplit("/", 1)[-1] for p in wavs} == {"input.wav", "target.wav", "prediction.wav"}
    signals = {name: sf.read(client.download_artifacts(trained.run_id, f"{audio[0]}/{name}.wav"))
               for name in ("input", "target", "prediction")}
    lengths = {len(x) for x, fs in signals.values()}
    assert {fs for x, fs in signals.values()} == {44100} and len(lengths) == 1
    assert 0 < lengths.pop() <= int(0.2 * 44100)  # at most audio_seconds, within one validation stretch
    assert all(np.isfinite(x).all() for x, _ in signals.values())
    assert [f.path for f in client.list_artifacts(trained.run_id, "plots")]
    tables = {f.path for f in client.list_artifacts(trained.run_id, "settings")}
    assert {"settings/val_esr_by_setting.csv", "settings/test_esr_by_setting.png"} <= tables
    csv = open(client.download_artifacts(trained.run_id, "settings/val_esr_by_setting.csv")).read().splitlines()
    assert csv[0].startswith("setting,volume,treble,bass,middle,group,val_esr") and len(csv) == 3
    assert {f.path for f in client.list_artifacts(trained.run_id, "model")} >= {
        "model/config.json", "model/state_dict.pt", "model/model.ts"}


def test_run_describes_itself_and_its_data_and_draws_curves_per_epoch(trained, store):
    client = mlflow.tracking.MlflowClient(tracking_uri=store["uri"])
    run = client.get_run(trained.run_id)
    tags = run.data.tags
    assert tags["mlflow.user"] and tags["mlflow.source.name"] and tags["mlflow.source.type"] == "LOCAL"
    note = tags["mlflow.note.content"]
    assert "4 channels" in note and "receptive field 63 samples" in note and tags["dataset_hash"] in note
    assert f"validation ESR {trained.val_esr_tail_aware:.4g} tail-aware" in note and "2 epochs" in note
    [dataset] = run.inputs.dataset_inputs  # registered version -> run -> dataset
    assert dataset.dataset.digest == tags["dataset_hash"] and dataset.tags[0].value == "training"
    assert json.loads(dataset.dataset.profile)["knob_settings"] == 2
    for name in ("val_esr_tail_aware", "train_loss", "learning_rate"):  # one point per epoch, step = epochs done
        assert [m.step for m in client.get_metric_history(trained.run_id, name)] == [1, 2], name
    assert trained.epochs == 2 and trained.steps == 8 and trained.stopped_by == "max_epochs"
    assert not [k for k in run.data.metrics if k.startswith("system/")]  # a run of seconds: no system metrics
    assert run.data.metrics["steps"] == 8 and run.data.metrics["training_cpu_seconds"] > 0
    [model] = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{trained.run_id}'")
    assert model.name == f"{run.info.run_name}-wavenet-4ch-5layers-film"  # registrable from the run's page
    # The description names exactly the artifact folders the run has (issue 23: it listed an absent knobs/).
    listed = re.findall(r"`(\w+)/`", note.split("artifacts: ")[1])
    assert listed and sorted(listed) == sorted(a.path for a in client.list_artifacts(trained.run_id) if a.is_dir)
    assert "part of their audio held out for validation" in note


def test_saved_model_reloads_and_scripts(trained, store):
    loaded = load_model(trained.model_dir)
    assert loaded.run_config == tiny_config(store)
    assert loaded.conditioned and loaded.sample_rate == 44100
    scripted = torch.jit.load(str(trained.model_dir / "model.ts"))
    x = torch.randn(1, 1, 400)
    c = torch.tensor([[0.9, 0.9, 0.5, 0.5]])
    assert torch.allclose(scripted(x, c), loaded.net(x, c), atol=1e-6)
    from_mlflow = resolve_model(f"runs:/{trained.run_id}/model")
    assert from_mlflow.run_config == loaded.run_config


def test_render_cli_streams_and_checks_knobs(trained, store, tmp_path, capsys):
    fs = 44100
    t = np.arange(int(0.3 * fs)) / fs
    di = (0.3 * np.sin(2 * np.pi * 110 * t) * np.exp(-3 * t)).astype(np.float32)
    sf.write(tmp_path / "di.wav", di, fs, subtype="FLOAT")
    out = tmp_path / "amp.wav"
    model = str(trained.model_dir)
    assert main(["render", model, str(tmp_path / "di.wav"), str(out)]) == 2
    assert "give --volume --treble --bass --middle" in capsys.readouterr().err
    assert main(["render", model, str(tmp_path / "di.wav"), str(out), "--volume", "1.5", "--treble", "0.5",
                 "--bass", "0.5", "--middle", "0.5"]) == 2
    assert "volume: knob position 1.5 is outside 0..1" in capsys.readouterr().err
    assert main(["render", model, str(tmp_path / "di.wav"), str(out), "--volume", "0.9", "--treble", "0.9",
                 "--bass", "0.5", "--middle", "0.5", "--block-seconds", "0.01"]) == 0
    rendered, rate = sf.read(out)
    assert rate == fs and len(rendered) == len(di)
    # Streaming output equals one pass over the zero-padded input.
    loaded = load_model(trained.model_dir)
    rf = loaded.net.receptive_field
    with torch.inference_mode():
        x = torch.nn.functional.pad(torch.from_numpy(di).view(1, 1, -1), (rf - 1, 0))
        direct = loaded.net(x, torch.tensor([[0.9, 0.9, 0.5, 0.5]])).view(-1).numpy()
    np.testing.assert_allclose(rendered, direct, atol=1e-4)
    sf.write(tmp_path / "stereo.wav", np.stack([di, di], axis=1), fs)
    assert main(["render", model, str(tmp_path / "stereo.wav"), str(out), "--volume", "0.9",
                 "--treble", "0.9", "--bass", "0.5", "--middle", "0.5"]) == 2
    assert "mono" in capsys.readouterr().err


def test_nan_loss_fails_the_run_with_a_clear_error(store):
    cfg = tiny_config(store, learning_rate=1e30, gradient_clip=0.0, max_epochs=3)
    with pytest.raises(TrainingDiverged, match="lower train.learning_rate"):
        train(cfg, tracking_uri=store["uri"], progress=False, work_dir=store["root"] / "nan")
    client = mlflow.tracking.MlflowClient(tracking_uri=store["uri"])
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id],
                              order_by=["attributes.start_time DESC"], max_results=1)
    assert runs[0].info.status == "FAILED"
    assert "TrainingDiverged" in runs[0].data.tags["error"]
    assert "cost_params" in runs[0].data.metrics  # what was logged before the failure is kept


def test_mixed_precision_training_reports_the_float32_esr_of_its_model(store):
    """bf16 autocast trains (the CPU takes it too); the validation ESR it reports is the float32 ESR of
    the saved model, recomputed here outside any autocast."""
    from training.evaluate import evaluate_model

    result = train(tiny_config(store, precision="bf16-mixed", max_epochs=1, audio_seconds=0), track=False,
                   progress=False, work_dir=store["root"] / "bf16")
    loaded = load_model(result.model_dir)
    assert loaded.run_config.train.precision == "bf16-mixed" and loaded.run_config.train.batch_size == 4
    assert next(loaded.net.parameters()).dtype == torch.float32
    again = evaluate_model(loaded.net, loaded.run_config.data, "val", progress=False)
    assert math.isfinite(result.val_esr_tail_aware)
    assert result.val_esr_tail_aware == pytest.approx(again["esr_tail_aware"], rel=1e-6)


def test_loss_references_and_per_setting_metrics():
    """The batch ESR pools settings; 'setting' counts a quiet setting as much as a loud one; 'dataset'
    divides by the mean training power, so a near-silent batch cannot blow the loss up."""
    from ampmodel.metrics import ESRAccumulator
    from training.lightning_module import AmpModule

    def module(reference: str, floor: float = 0.0) -> AmpModule:
        cfg = run_config_from_mapping({"model": {"channels": 2, "dilations": "1..2"},
                                       "train": {"loss": {"pre_emphasis": 0.0, "reference": reference,
                                                          "setting_power_floor": floor}}})
        return AmpModule(cfg, groups=["train", "train"], reference=[1.0, 1e-4])  # loud, quiet setting

    target = torch.stack([torch.ones(1, 100), 0.01 * torch.ones(1, 100)])
    setting = torch.tensor([0, 1])
    worse_quiet = torch.stack([0.5 * target[0], torch.zeros(1, 100)])  # ESR 0.25 loud, 1.0 quiet
    pooled = (0.25 * 100 + 1e-4 * 100) / (100 + 1e-4 * 100)
    mean_power = (1.0 + 1e-4) / 2
    for reference, expected in (("batch", pooled), ("setting", (0.25 + 1) / 2),
                                ("dataset", (0.25 + 1e-4) / 2 / mean_power)):
        assert module(reference)._loss(worse_quiet, target, setting).item() == pytest.approx(expected, rel=1e-3)
    floored = (0.25 + 1e-4 / (0.01 * mean_power)) / 2  # the quiet setting counts as if at -20 dB re the mean
    assert module("setting", floor=0.01)._loss(worse_quiet, target, setting).item() == pytest.approx(floored, rel=1e-3)
    near_silent = 1e-3 * torch.ones(1, 1, 100)  # a quiet stretch; the model is off by 0.01
    for reference, expected in (("batch", 100.0), ("dataset", 1e-4 / mean_power)):
        loss = module(reference)._loss(near_silent + 0.01, near_silent, torch.tensor([1]))
        assert loss.item() == pytest.approx(expected, rel=1e-3), reference
    acc = ESRAccumulator(pre_emphasis=0.0)
    acc.update(worse_quiet, target, setting)
    assert acc.esr() == pytest.approx(pooled, rel=1e-6) and acc.esr([1]) == pytest.approx(1.0)
    assert acc.mean() == pytest.approx(0.625) and acc.worst_setting() == pytest.approx(1.0)
    assert acc.geometric_mean() == pytest.approx(0.5)  # sqrt(0.25 * 1.0): each setting counts the same, in dB
    assert acc.geometric_mean([0]) == pytest.approx(0.25) and math.isnan(acc.geometric_mean([7]))


def test_a_model_trained_on_a_knob_design_reports_unseen_settings_apart(store):
    table = json.loads(json.dumps(TINY))
    table["data"] = {"data_dir": store["data"], "sample_rate": 16000, "seed": 2,
                     "knobs": {"settings": [], "design_settings": 6, "design_seconds": 0.4,
                               "sweep_test_settings": False, "response_points": 2, "response_seconds": 0.3},
                     "audio": {"region_seconds": 0.1}, "simulation": {"chunk_seconds": 0.4, "warmup_seconds": 0.05}}
    table["train"]["max_epochs"] = 2
    result = train(run_config_from_mapping(table), tracking_uri=store["uri"], evaluate_test=True, progress=False,
                   work_dir=store["root"] / "design")
    for metrics in (result.val_metrics, result.test_metrics):
        assert math.isfinite(metrics["esr_geomean_unseen_settings"])
        assert math.isfinite(metrics["esr_geomean_seen_settings"])
        assert metrics["scored_on"] == "unseen"  # the objective / the gate: never-trained settings
        unseen = [next(v for k, v in r.items() if k.endswith("_esr")) for r in metrics["settings_table"]
                  if r["group"] != "train"]
        assert metrics["esr_geomean_unseen_settings"] == pytest.approx(
            math.exp(sum(map(math.log, unseen)) / len(unseen)), rel=1e-9)
        floored = math.exp(sum(math.log(max(v, 1e-3)) for v in unseen) / len(unseen))
        assert metrics["esr_geomean_floored"] == pytest.approx(floored, rel=1e-9)
        assert metrics["esr_worst_scored_setting"] == max(unseen) == metrics["esr_worst_unseen_setting"]
        assert metrics["esr_mean_scored_settings"] == pytest.approx(sum(unseen) / len(unseen), rel=1e-9)
        assert metrics["esr_tail_aware"] == pytest.approx(tail_aware_esr(floored, max(unseen)), rel=1e-9)
        assert sorted(metrics["per_scored_setting"].values()) == sorted(unseen)
        assert math.isfinite(metrics["esr_pooled_unseen_settings"]) and metrics["esr_pooled"] == metrics[
            "esr_pooled_unseen_settings"]
        assert metrics["esr_geomean_unseen_settings"] != metrics["esr_geomean_seen_settings"]
    assert {r["group"] for r in result.val_metrics["settings_table"]} == {"train", "val"}
    assert {r["group"] for r in result.test_metrics["settings_table"]} == {"train", "test"}
    client = mlflow.tracking.MlflowClient(tracking_uri=store["uri"])
    run = client.get_run(result.run_id)
    assert run.data.metrics["best_val_esr_tail_aware"] == pytest.approx(result.val_metrics["esr_tail_aware"])
    assert "best_val_esr_geomean_seen_settings" in run.data.metrics
    assert "test_esr_geomean_unseen_settings" in run.data.metrics
    assert {f.path for f in client.list_artifacts(result.run_id, "knobs")} == {"knobs/knob_response.csv",
                                                                            "knobs/knob_response.png"}
    rows = open(client.download_artifacts(result.run_id, "knobs/knob_response.csv")).read().splitlines()
    assert len(rows) == 1 + 8 and rows[0].startswith("knob,position,setting,spice_level_db,model_level_db")
    audio = [f.path for f in client.list_artifacts(result.run_id, "audio")]
    assert any("_unseen_" in path for path in audio) and any("_seen_" in path for path in audio)


def test_sigterm_stops_ampstudy_train_at_a_safe_point_with_its_exit_code(study_data_dir, tmp_path):
    """Lightning turns SIGTERM into a SystemExit at a batch end: `ampstudy train` exited 0 as if done."""
    import signal
    import subprocess
    import sys

    from tests.conftest import TINY_STUDY, global_mlflow_uris_restored, wait_for
    from training import tracking

    text = TINY_STUDY.read_text()
    run_config = text[text.index("[base]"):text.index("[space")].replace("[base]\n", "").replace("[base.", "[")
    (tmp_path / "run.toml").write_text(run_config)
    overrides = [f'data.data_dir="{study_data_dir}"', "train.max_epochs=5000", "train.early_stopping_patience=5000",
                 "train.audio_seconds=0"]
    command = [sys.executable, "-m", "ampstudy.cli", "train", "--config", str(tmp_path / "run.toml"),
               *[arg for o in overrides for arg in ("--set", o)]]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"})
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"

    def fitting():  # a run with a validation ESR logged: Lightning's fit loop is running
        if process.poll() is not None or not (tmp_path / "mlruns" / "mlflow.db").exists():
            return None
        client = tracking.client(uri)
        ids = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(ids, "metrics.val_esr_tail_aware > -1") if ids else []
        return runs[0] if runs else None

    with global_mlflow_uris_restored():
        run = wait_for(fitting, timeout=180, interval=0.5, what="training to fit")
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 128 + signal.SIGTERM, err[-3000:]
        assert "stopped by SIGTERM at a safe point (after step" in err.strip().splitlines()[-1]
        assert tracking.client(uri).get_run(run.info.run_id).info.status == "KILLED"
