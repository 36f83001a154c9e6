"""Study verdicts that can be trusted: models learn, equal compute gives equal models whatever the
machine's load, a broken knob setting loses, a trial cut by the safety timeout is not ranked, and
a NaN at one setting is named."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from optuna.trial import TrialState

from ampmodel.metrics import AUDIBILITY_FLOOR_ESR, ESRAccumulator, tail_aware_esr
from ampstudy.cli import main
from studies.objective import TIMED_OUT_ATTR
from studies.runner import run_study
from studies.spec import load_study_spec
from tests.conftest import write_study_file
from training.run_config import run_config_from_mapping
from training.train import SAMPLE_BUDGET, train

SMALL = {
    "experiment": "verdicts",
    "data": {"sample_rate": 16000,
             "knobs": {"settings": [{"volume": 0.5, "treble": 0.5, "bass": 0.5, "middle": 0.5},
                                    {"volume": 0.8, "treble": 0.7, "bass": 0.3, "middle": 0.6}]},
             "audio": {"corpus_seconds": 2.0, "region_seconds": 0.5, "region_split": [0.5, 0.25, 0.25]},
             "simulation": {"chunk_seconds": 1.0, "warmup_seconds": 0.1}},
    "model": {"channels": 8, "dilations": "1..64", "kernel_size": 3, "conditioning": "film", "film_hidden": 8},
    "train": {"batch_size": 4, "segment_samples": 1024, "learning_rate": 0.005, "audio_seconds": 0, "threads": 1},
}


def accumulator(per_setting: list[float]) -> ESRAccumulator:
    """An accumulator whose settings 0..n-1 have exactly these ESRs (error energy over unit energy)."""
    acc = ESRAccumulator()
    acc.error = dict(enumerate(per_setting))
    acc.energy = {s: 1.0 for s in range(len(per_setting))}
    return acc


def test_a_model_with_one_broken_setting_ranks_below_a_uniformly_good_one():
    broken, uniform = accumulator([0.03] * 28 + [35.0]), accumulator([0.05] * 29)
    # The unfloored geometric mean alone prefers the broken model (the reason for the tail term).
    assert broken.geometric_mean() == pytest.approx(0.0383, abs=1e-4)
    assert broken.geometric_mean() < uniform.geometric_mean()
    assert broken.tail_aware() > 5 * uniform.tail_aware()
    assert uniform.tail_aware() == pytest.approx(0.05)  # a healthy tail leaves the geometric mean as it is
    # A mildly bad corner (20x the rest) costs its share but still lets a better typical model win.
    corner = accumulator([0.03] * 28 + [0.6])
    assert uniform.tail_aware() > corner.tail_aware() > corner.geometric_mean(floor=AUDIBILITY_FLOOR_ESR)


def test_a_tiny_esr_at_one_setting_buys_back_nothing_below_the_floor():
    perfect_somewhere = accumulator([1e-7, 0.05, 0.05])  # unfloored, the 1e-7 drags the mean down 20x
    honest = accumulator([1e-3, 0.04, 0.04])  # better at every setting a player can hear a difference at
    assert perfect_somewhere.geometric_mean() < honest.geometric_mean()
    assert perfect_somewhere.tail_aware() > honest.tail_aware()
    assert accumulator([1e-7]).tail_aware() == pytest.approx(AUDIBILITY_FLOOR_ESR)
    assert math.isnan(tail_aware_esr(math.nan, 1.0))


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    return str(tmp_path_factory.mktemp("verdict-data"))


def small_config(data_dir: str, **train):
    table = json.loads(json.dumps(SMALL))
    table["data"]["data_dir"] = data_dir
    table["train"].update(train)
    return run_config_from_mapping(table)


def test_a_small_wavenet_learns_one_fixed_batch(small_data):
    """The project's model, loss and optimiser fit one fixed batch of real SPICE audio: a broken
    gradient path, loss or conditioning would leave the ESR near 1."""
    from datamodules.bassman import BassmanDataModule
    from training.lightning_module import AmpModule

    torch.manual_seed(0)
    cfg = small_config(small_data)
    dm = BassmanDataModule(cfg.data, receptive_field=cfg.model.receptive_field, segment_samples=1024, batch_size=4,
                           progress=False)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    module = AmpModule(cfg, groups=dm.groups)
    optimizer = module.configure_optimizers()["optimizer"]

    def loss() -> torch.Tensor:
        return module._loss(module(batch["input"], batch["controls"]), batch["target"], batch["setting"])

    first = float(loss())
    for _ in range(300):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    assert first > 0.5 and float(loss().detach()) < 0.02, (first, float(loss().detach()))


def test_equal_training_samples_give_the_same_model_on_an_idle_and_a_busy_machine(small_data):
    """The compute budget: the same samples, the same steps, the same model, whatever else runs."""
    cfg = small_config(small_data, max_samples=40_000, max_epochs=1000, early_stopping_patience=0,
                       limit_train_batches=4)
    idle = train(cfg, track=False, progress=False)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        busy = train(cfg, track=False, progress=False)
    finally:
        for hog in hogs:
            hog.kill()
    steps = math.ceil(40_000 / (4 * 1024))
    assert idle.steps == busy.steps == steps and idle.samples == busy.samples == steps * 4 * 1024
    assert idle.stopped_by == busy.stopped_by == SAMPLE_BUDGET
    assert busy.val_esr_tail_aware == pytest.approx(idle.val_esr_tail_aware, rel=1e-9)
    # The last 2 steps came after the last validation (epochs of 4 steps): those weights were judged too.
    assert idle.val_metrics["esr_tail_aware"] == idle.val_esr_tail_aware


def test_a_trial_cut_by_the_safety_timeout_fails_and_is_not_ranked(study_workdir, study_data_dir):
    path = write_study_file(study_workdir / "t.toml", study_data_dir, name="timeout", n_trials=1,
                            replace={"trial_max_minutes = 2.0": "trial_max_minutes = 0.0001\ntrial_samples = 400000",
                                     "max_epochs = 2": "max_epochs = 1000"})
    study = run_study(load_study_spec(path), report=False)
    [trial] = study.trials
    assert trial.state == TrialState.FAIL and trial.user_attrs[TIMED_OUT_ATTR] is True
    assert "trial_max_minutes" in trial.user_attrs["error"] and "not ranked" in trial.user_attrs["error"]
    assert trial.user_attrs["samples_trained"] < 400_000


def test_hyperband_prunes_on_training_samples(study_workdir, study_data_dir):
    """Trials report their best validation ESR so far at steps counted in training samples, and
    Hyperband's rungs are in samples."""
    per_epoch = 3 * 4 * 1024  # limit_train_batches x batch_size x segment_samples of the test study
    path = write_study_file(
        study_workdir / "h.toml", study_data_dir, name="hyper", n_trials=5,
        replace={'kind = "median"\nstartup_trials = 2\nwarmup_samples = 0':
                 f'kind = "hyperband"\nmin_samples = {per_epoch}',
                 "trial_max_minutes = 2.0": f"trial_max_minutes = 2.0\ntrial_samples = {9 * per_epoch}",
                 "max_epochs = 2": "max_epochs = 1000", "early_stopping_patience = 2": "early_stopping_patience = 0"})
    study = run_study(load_study_spec(path), report=False)
    reported = [t for t in study.trials if t.intermediate_values]
    assert len(reported) == 5
    for t in reported:
        assert all(step % per_epoch == 0 for step in t.intermediate_values), t.intermediate_values
        assert max(t.intermediate_values) <= 9 * per_epoch
        reports = [t.intermediate_values[step] for step in sorted(t.intermediate_values)]
        assert reports == sorted(reports, reverse=True)  # the best so far: what the trial would return
    complete = [t for t in reported if t.state == TrialState.COMPLETE]
    assert complete and all(t.user_attrs["samples_trained"] == 9 * per_epoch for t in complete)
    assert all(t.user_attrs["device"].startswith("cpu") and t.user_attrs["threads"] == 1 for t in complete)


def test_a_nan_at_one_knob_setting_ends_the_run_with_one_line_naming_it(small_data, tmp_path, capsys):
    """A validation setting whose SPICE target holds a NaN: the run ends with one line that names
    the setting (not Lightning's 'monitored key not found')."""
    from datamodules.dataset import file_record, locate_dataset, prepare_dataset

    table = json.loads(json.dumps(SMALL))
    table["data"] = {"data_dir": str(tmp_path / "data"), "sample_rate": 16000, "seed": 2,
                     "knobs": {"settings": [], "design_settings": 6, "design_seconds": 0.4,
                               "sweep_test_settings": False, "response_points": 0},
                     "audio": {"region_seconds": 0.1}, "simulation": {"chunk_seconds": 0.4, "warmup_seconds": 0.05}}
    cfg = run_config_from_mapping(table)
    prepare_dataset(cfg.data, progress=False)
    folder = locate_dataset(cfg.data)
    manifest = json.loads((folder / "manifest.json").read_text())
    index, record = next((i, s) for i, s in enumerate(manifest["settings"]) if s["group"] == "val")
    target, fs = sf.read(folder / record["file"], dtype="float32")
    target[len(target) // 2] = np.nan
    sf.write(folder / record["file"], target, fs, subtype="FLOAT")
    manifest["files"][record["file"]] = file_record(folder / record["file"])  # as if SPICE had produced it
    (folder / "manifest.json").write_text(json.dumps(manifest))
    config = tmp_path / "run.toml"
    config.write_text(f'[data]\n{_toml_table(table["data"])}\n[model]\nchannels = 4\ndilations = "1..8"\n'
                      "[train]\nmax_epochs = 1\nbatch_size = 4\nsegment_samples = 256\nlimit_train_batches = 2\n"
                      "audio_seconds = 0\n")
    capsys.readouterr()
    code = main(["train", "--config", str(config), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    printed = capsys.readouterr().err
    err = [line for line in printed.splitlines() if line.startswith("ampstudy:")]  # MLflow logs its store's creation
    assert code == 2 and len(err) == 1 and "Traceback" not in printed, printed
    volume = record["pots"]["volume"]
    assert f"knob setting {index} (volume {volume:.2f}" in err[0] and "(val group)" in err[0], err


def _toml_table(values: dict, prefix: str = "") -> str:
    """A table's keys as TOML lines; a nested table as dotted keys (knobs.settings = ...)."""
    return "\n".join(_toml_table(v, f"{prefix}{k}.") if isinstance(v, dict) else f"{prefix}{k} = {json.dumps(v)}"
                     for k, v in values.items())


def test_the_compute_budget_is_part_of_the_fingerprint_and_the_timeout_is_not():
    from studies.fingerprint import fingerprint_fields
    from studies.spec import study_spec_from_mapping
    from foundation.configs import load_toml

    table = load_toml("studies/demo.toml")
    spec = study_spec_from_mapping(table)
    assert spec.base.train.max_samples == spec.budget.trial_samples > 0
    fields = fingerprint_fields(spec)
    more = study_spec_from_mapping({**table, "budget": {**table["budget"], "trial_samples": 2 * spec.budget.trial_samples}})
    slower = study_spec_from_mapping({**table, "budget": {**table["budget"], "trial_max_minutes": 99}})
    assert fingerprint_fields(more)["base.train.max_samples"] != fields["base.train.max_samples"]
    assert fingerprint_fields(slower) == fields


def test_the_seed_spread_benchmark_runs(study_data_dir, capsys):
    """benchmarks/seed_spread.py (what sets the gate's margin) in its smoke mode, on the tiny dataset."""
    from benchmarks.seed_spread import main as seed_spread

    assert seed_spread(["--smoke", "--data-dir", str(study_data_dir)]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\| (\d+) \| ([\d,]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", out, re.MULTILINE)
    assert [r[0] for r in rows] == ["0", "1"], out
    assert len({r[1] for r in rows}) == 1 and int(rows[0][1].replace(",", "")) >= 20_000, out  # equal compute
    for _, _, tail, geomean, worst in rows:
        assert 0 < float(geomean) <= float(worst) < 10 and 0 < float(tail) < 10, rows
    spread = re.search(r"max/min - 1 = \*\*([\d.]+)%\*\*", out)
    values = [float(r[2]) for r in rows]
    assert spread and abs(float(spread.group(1)) - 100 * (max(values) / min(values) - 1)) < 0.2, out
