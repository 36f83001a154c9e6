"""Cached SPICE dataset and BassmanDataModule, with real ngspice on a fraction of a second of audio."""

from __future__ import annotations

import dataclasses
import json

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

import foundation
from datamodules import dataset as ds
from datamodules import spice
from datamodules.bassman import BassmanDataModule, merged_spans, tile_windows
from datamodules.config import DataConfig, PotSettings
from datamodules.knob_settings import held_out_indices, resolve_settings
from datamodules.netlist import netlist_hash, render_netlist
from foundation.errors import AmpStudyError, ConfigError

RF, SEGMENT = 64, 1000
DARK, BRIGHT = PotSettings(treble=0.0), PotSettings(treble=1.0)


def tiny_config(data_dir, **overrides) -> DataConfig:
    base = dict(data_dir=str(data_dir), corpus_seconds=0.6, region_seconds=0.1, chunk_seconds=0.3,
                warmup_seconds=0.05, settings=(DARK, BRIGHT), random_settings=1, held_out_settings=1,
                workers=2, seed=0)
    return DataConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    cfg = tiny_config(tmp_path_factory.mktemp("data"))
    dm = BassmanDataModule(cfg, receptive_field=RF, segment_samples=SEGMENT, batch_size=4, progress=False)
    dm.prepare_data()
    dm.setup("fit")
    return cfg, dm


def no_simulation(*args, **kwargs):
    raise AssertionError("simulate must not run on a cache hit")


def test_batches_have_the_documented_shapes(prepared):
    _, dm = prepared
    for loader, length in ((dm.train_dataloader(), SEGMENT), (dm.val_dataloader(), dm.eval_length),
                           (dm.test_dataloader(), dm.eval_length)):
        batch = next(iter(loader))
        assert batch["input"].shape == (4, 1, length + RF - 1) and batch["input"].dtype == torch.float32
        assert batch["target"].shape == (4, 1, length) and batch["target"].dtype == torch.float32
        assert batch["mask"].shape == (4, 1, length)
        assert batch["controls"].shape == (4, 4) and batch["setting"].dtype == torch.long
        for controls, setting in zip(batch["controls"], batch["setting"]):
            assert controls.tolist() == pytest.approx(dm.settings[setting].as_tuple())


def test_items_align_input_context_with_target(prepared):
    _, dm = prepared
    data = dm._data
    sampler = dm.train_dataloader().sampler
    items = dm.train_dataloader().dataset
    for key in list(iter(sampler))[:20]:
        setting, start, length, _ = key
        item = items[key]
        expected_input = np.concatenate([np.zeros(RF), data.input])[start + 1:start + length + RF]
        assert np.array_equal(item["input"][0].numpy(), expected_input)
        assert np.array_equal(item["target"][0].numpy(), data.targets[setting][start:start + length])


def test_training_uses_only_train_regions_of_training_settings(prepared):
    _, dm = prepared
    train_spans = merged_spans(dm._data.regions, "train")
    keys = list(iter(dm.train_dataloader().sampler))
    assert len(keys) >= 1
    for setting, start, length, _ in keys:
        assert setting not in dm.test_settings_held_out
        assert any(s <= start and start + length <= e for s, e in train_spans)
    for batch in dm.val_dataloader():
        assert not set(batch["setting"].tolist()) & set(dm.test_settings_held_out)
    test_settings = {s for b in dm.test_dataloader() for s in b["setting"].tolist()}
    assert set(dm.test_settings_held_out) <= test_settings


def test_val_and_test_windows_cover_each_region_exactly_once(prepared):
    _, dm = prepared
    regions = dm._data.regions
    for split, windows, settings in (("val", dm.val_windows, dm.train_settings),
                                     ("test", dm.test_windows, range(len(dm.settings)))):
        for setting in settings:
            covered = np.zeros(len(dm._data.input))
            for s, start, length, valid_from in windows:
                if s == setting:
                    covered[start + valid_from:start + length] += 1
            wanted = np.zeros_like(covered)
            for start, end in dm.split_spans(split, setting):
                wanted[start:end] = 1
            assert wanted.sum() > 0
            assert np.array_equal(covered, wanted), (split, setting)
    val_samples = sum(e - s for s, e, name in regions if name == "val") * len(dm.train_settings)
    assert sum(float(b["mask"].sum()) for b in dm.val_dataloader()) == val_samples
    held = dm.test_settings_held_out[0]
    assert dm.split_spans("test", held) == [(0, len(dm._data.input))]  # held out: all its audio
    assert tile_windows((0, 2500), 1000, 0) == [(0, 0, 1000, 0), (0, 1000, 1000, 0), (0, 1500, 1000, 500)]
    assert {name for *_, name in regions} == {"train", "val", "test"}


def test_training_segments_are_seeded_and_reshuffled_each_epoch(prepared):
    cfg, dm = prepared
    first = dm.train_dataloader().sampler
    epoch0, epoch1 = list(iter(first)), list(iter(first))
    assert epoch0 != epoch1
    again = BassmanDataModule(cfg, RF, SEGMENT, 4, progress=False)
    again.setup()
    assert list(iter(again.train_dataloader().sampler)) == epoch0
    other_seed = BassmanDataModule(cfg, RF, SEGMENT, 4, seed=123, progress=False)
    other_seed.setup()
    assert list(iter(other_seed.train_dataloader().sampler)) != epoch0


def test_splits_depend_only_on_seed_and_length():
    a = ds.assign_splits(40, (0.8, 0.1, 0.1), seed=0)
    assert a == ds.assign_splits(40, (0.8, 0.1, 0.1), seed=0)
    assert a != ds.assign_splits(40, (0.8, 0.1, 0.1), seed=1)
    assert (a.count("train"), a.count("val"), a.count("test")) == (32, 4, 4)
    assert ds.assign_splits(5, (0.9, 0.1, 0.0), seed=3).count("val") == 1
    assert "test" not in ds.assign_splits(5, (0.9, 0.1, 0.0), seed=3)
    with pytest.raises(ConfigError, match="region_seconds"):
        ds.assign_splits(2, (0.8, 0.1, 0.1), seed=0)


def test_silent_regions_are_never_validation_or_test():
    audible = [i % 3 != 0 for i in range(30)]  # every third region is silence
    a = ds.assign_splits(30, (0.6, 0.2, 0.2), seed=0, audible=audible)
    assert (a.count("train"), a.count("val"), a.count("test")) == (18, 6, 6)
    assert all(name == "train" for name, heard in zip(a, audible) if not heard)
    assert ds.assign_splits(40, (0.8, 0.1, 0.1), seed=0, audible=[True] * 40) == ds.assign_splits(
        40, (0.8, 0.1, 0.1), seed=0)
    with pytest.raises(ConfigError, match="carry signal"):
        ds.assign_splits(10, (0.6, 0.2, 0.2), seed=0, audible=[True] * 3 + [False] * 7)
    fs = 1000
    x = np.concatenate([np.zeros(fs), 0.1 * np.ones(fs), 1e-4 * np.ones(fs)]).astype(np.float32)
    assert ds.audible_regions(x, ds.plan_regions(len(x), fs, 1.0)) == [False, True, False]


def test_manifest_records_what_was_built(prepared):
    cfg, dm = prepared
    m = dm.manifest
    assert dm.dataset_dir.name == m["hash"] and dm.dataset_dir.parent.name == cfg.data_dir.split("/")[-1]
    assert json.loads((dm.dataset_dir / "manifest.json").read_text()) == m
    assert m["ngspice_version"] == spice.ngspice_version()
    assert m["code_version"] == f"{foundation.__version__}+ds{ds.DATASET_FORMAT}"
    assert m["seed"] == cfg.seed and m["sample_rate"] == cfg.sample_rate == dm.sample_rate
    assert m["input"]["samples"] == round(0.6 * cfg.sample_rate) and m["input_full_scale_volts"] == 1.0
    assert [s["netlist_hash"] for s in m["settings"]] == [netlist_hash(render_netlist(p)) for p in dm.settings]
    assert dm.settings == resolve_settings(cfg) and len(dm.settings) == 3
    assert m["held_out"] == dm.test_settings_held_out == held_out_indices(cfg, 3)
    assert [s["held_out"] for s in m["settings"]].count(True) == 1
    regions = [(r["start"], r["end"]) for r in m["regions"]]
    assert regions[0][0] == 0 and regions[-1][1] == m["input"]["samples"]
    assert all(a[1] == b[0] for a, b in zip(regions, regions[1:]))
    assert [r["split"] for r in m["regions"]] == ds.assign_splits(
        len(regions), cfg.split, cfg.seed, ds.audible_regions(dm._data.input, regions))
    assert m["wall_seconds"] > 0
    assert m["target_scales"] == [s["target_scale_volts"] for s in m["settings"]]
    assert len(set(m["target_scales"])) == 1  # one scale for all settings keeps level differences
    peaks = []
    for record, target in zip(m["settings"], dm._data.targets):
        assert record["target_scale_volts"] > 0 and np.isfinite(record["dc_removed_volts"])
        peaks.append(float(np.abs(target).max()))
        assert peaks[-1] == pytest.approx(record["peak_volts"] / record["target_scale_volts"], rel=1e-5)
        assert abs(float(target.mean())) < 0.1  # DC-blocked
    assert max(peaks) == pytest.approx(1.0)  # normalised by the loudest setting


def test_second_prepare_is_a_cache_hit_without_simulation(prepared, monkeypatch):
    cfg, dm = prepared
    monkeypatch.setattr(spice, "simulate", no_simulation)
    assert ds.prepare_dataset(cfg, progress=False) == dm.dataset_dir
    # workers and data_dir-independent fields do not change the hash
    assert ds.prepare_dataset(dataclasses.replace(cfg, workers=1), progress=False) == dm.dataset_dir
    # split and DC-block changes make a new dataset from the cached raw targets
    new = ds.prepare_dataset(dataclasses.replace(cfg, split=(0.6, 0.2, 0.2), dc_block_hz=10.0), progress=False)
    assert new != dm.dataset_dir and (new / "manifest.json").is_file()
    assert not [p for p in new.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_adding_a_setting_simulates_only_that_setting(prepared, monkeypatch):
    cfg, dm = prepared
    calls = []

    def fake_simulate(x, fs, pots, **kwargs):
        calls.append(pots)
        return np.tanh(x) + 0.1  # cheap stand-in: this test is about caching, not the circuit

    monkeypatch.setattr(spice, "simulate", fake_simulate)
    extra = PotSettings(volume=0.2)
    path = ds.prepare_dataset(dataclasses.replace(cfg, settings=cfg.settings + (extra,)), progress=False)
    assert calls == [extra]
    manifest = json.loads((path / "manifest.json").read_text())
    assert [s["cache_hit"] for s in manifest["settings"]].count(False) == 1
    assert manifest["settings"][2]["dc_removed_volts"] == pytest.approx(0.1)


def test_very_different_treble_gives_different_targets(prepared):
    _, dm = prepared
    dark, bright = (dm._data.targets[dm.settings.index(p)].astype(np.float64) for p in (DARK, BRIGHT))
    freqs = np.fft.rfftfreq(len(dark), 1 / dm.sample_rate)

    def treble_share(y):
        power = np.abs(np.fft.rfft(y)) ** 2
        return power[freqs > 2000].sum() / power.sum()

    assert np.sqrt(np.mean((dark - bright) ** 2)) > 0.05 * np.sqrt(np.mean(bright**2))
    assert treble_share(bright) > 10 * treble_share(dark)


def test_example_returns_contiguous_audio_with_context(prepared):
    _, dm = prepared
    inp, target, controls = dm.example("val", 0, seconds=1.0)
    assert len(inp) == len(target) + RF - 1 and len(target) > 0
    start = int(np.flatnonzero(np.all(
        np.lib.stride_tricks.sliding_window_view(dm._data.targets[0], len(target)) == target, axis=1))[0])
    assert np.array_equal(inp[RF - 1:], dm._data.input[start:start + len(target)])
    assert all(r[2] == "val" for r in dm._data.regions if r[0] < start + len(target) and r[1] > start)
    assert controls.tolist() == pytest.approx(dm.settings[0].as_tuple())
    with pytest.raises(AmpStudyError, match="held-out"):
        dm.example("val", dm.test_settings_held_out[0], 1.0)


def test_setup_without_prepare_says_what_to_do(tmp_path):
    dm = BassmanDataModule(tiny_config(tmp_path), RF, SEGMENT, 4)
    with pytest.raises(AmpStudyError, match="prepare_data"):
        dm.setup("fit")


def test_config_problems_fail_before_any_simulation(prepared, tmp_path, monkeypatch):
    monkeypatch.setattr(spice, "simulate", no_simulation)
    with pytest.raises(ConfigError, match="held_out_settings"):
        ds.prepare_dataset(tiny_config(tmp_path, held_out_settings=3), progress=False)
    with pytest.raises(ConfigError, match="region_seconds"):
        ds.prepare_dataset(tiny_config(tmp_path, region_seconds=0.3), progress=False)
    assert not any(tmp_path.iterdir())
    too_long = BassmanDataModule(prepared[0], RF, segment_samples=10_000, batch_size=4)
    with pytest.raises(AmpStudyError, match="lower segment_samples"):
        too_long.setup()


def test_user_wavs_are_appended_after_a_gap(tmp_path):
    from datamodules.audio_io import save_wav
    wav = (0.3 * np.sin(np.arange(22050) / 10)).astype(np.float32)
    save_wav(tmp_path / "di.wav", wav, 44100)
    cfg = tiny_config(tmp_path, wav_files=(str(tmp_path / "di.wav"),))
    x, sources = ds.build_input(cfg)
    assert [s["kind"] for s in sources] == ["synth", "wav"]
    start = sources[1]["start"]
    assert start == round(0.6 * 44100) + round(ds.WAV_GAP_SECONDS * 44100)
    assert np.array_equal(x[start:], wav) and not x[start - 100:start].any()
    moved = tiny_config(tmp_path / "elsewhere", wav_files=(str(tmp_path / ".." / tmp_path.name / "di.wav"),))
    assert ds.plan_dataset(moved).key == ds.plan_dataset(cfg).key  # paths are not content


class TinyModel(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 1, RF)

    def training_step(self, batch, _):
        return torch.mean((self.conv(batch["input"]) - batch["target"]) ** 2)

    def validation_step(self, batch, _):
        self.log("val_loss", torch.mean(batch["mask"] * (self.conv(batch["input"]) - batch["target"]) ** 2))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_lightning_trainer_runs_prepare_setup_and_loops(prepared, monkeypatch):
    cfg, _ = prepared
    monkeypatch.setattr(spice, "simulate", no_simulation)
    dm = BassmanDataModule(cfg, RF, SEGMENT, batch_size=4, progress=False)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu")
    trainer.fit(TinyModel(), datamodule=dm)
    assert trainer.global_step == 2 and dm.manifest is not None
