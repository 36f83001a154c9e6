"""Cached SPICE dataset and BassmanDataModule, with real ngspice on fractions of a second of audio."""

from __future__ import annotations

import dataclasses
import json
import os
import stat

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from datamodules import dataset as ds
from datamodules import dataset_plan as plan
from datamodules import spice
from datamodules.bassman import BassmanDataModule, merged_spans
from datamodules.config import AudioConfig, DataConfig, KnobsConfig, PotSettings, SimulationConfig
from datamodules.segments import RandomSegments, SegmentBatches
from datamodules.knob_design import plan_settings
from datamodules.netlist import netlist_hash, render_netlist
from foundation.errors import AmpStudyError, ConfigError

RF, SEGMENT, FS = 64, 1000, 16000
DARK, BRIGHT = PotSettings(treble=0.0), PotSettings(treble=1.0)


def tiny_config(data_dir, *, knobs: dict | None = None, audio: dict | None = None, **top) -> DataConfig:
    """0.6 s of DI at three listed settings (one held out); `knobs`/`audio` override keys of those groups."""
    return DataConfig(**{"data_dir": str(data_dir), "sample_rate": FS, "workers": 2, "seed": 0, **top},
                      knobs=KnobsConfig(**{"settings": (DARK, BRIGHT), "random_settings": 1, "held_out_settings": 1,
                                           **(knobs or {})}),
                      audio=AudioConfig(**{"corpus_seconds": 0.6, "region_seconds": 0.1, **(audio or {})}),
                      simulation=SimulationConfig(chunk_seconds=0.3, warmup_seconds=0.05))


def tiny_design(data_dir, **knobs) -> DataConfig:
    """Six design settings (four train, one val, one test) of 0.4 s each, no sweep end points."""
    return tiny_config(data_dir, seed=2, knobs={"settings": (), "random_settings": 0, "held_out_settings": 0,
                                                "design_settings": 6, "design_seconds": 0.4,
                                                "sweep_test_settings": False, **knobs})


def ready(cfg: DataConfig) -> BassmanDataModule:
    dm = BassmanDataModule(cfg, receptive_field=RF, segment_samples=SEGMENT, batch_size=4, progress=False)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    cfg = tiny_config(tmp_path_factory.mktemp("data"))
    return cfg, ready(cfg)


@pytest.fixture(scope="module")
def designed(tmp_path_factory):
    cfg = tiny_design(tmp_path_factory.mktemp("design"))
    return cfg, ready(cfg)


def no_simulation(*args, **kwargs):
    raise AssertionError("ngspice must not run on a cache hit")


def test_batches_have_the_documented_shapes(prepared):
    _, dm = prepared
    batch = next(iter(dm.train_dataloader()))
    assert batch["input"].shape == (4, 1, SEGMENT + RF - 1) and batch["input"].dtype == torch.float32
    assert batch["target"].shape == (4, 1, SEGMENT) and batch["target"].dtype == torch.float32
    assert batch["controls"].shape == (4, 4) and batch["setting"].dtype == torch.long
    for controls, setting in zip(batch["controls"], batch["setting"]):
        assert controls.tolist() == pytest.approx(dm.settings[setting].as_tuple())
    for split in ("val", "test"):
        for item in dm.eval_dataloader(split):  # whole spans, one per batch
            assert item["input"].shape[-1] == item["target"].shape[-1] + RF - 1 and item["input"].shape[0] == 1


def test_items_align_input_context_with_target(prepared):
    _, dm = prepared
    x = dm.data.inputs["shared"]
    items = dm.train_dataloader().dataset
    for setting, start, end in list(iter(dm.train_dataloader().sampler))[:20]:
        item = items[(setting, start, end)]
        expected_input = np.concatenate([np.zeros(RF), x])[start + 1:end + RF]
        assert np.array_equal(item["input"][0].numpy(), expected_input)
        assert np.array_equal(item["target"][0].numpy(), dm.data.targets[setting][start:end])


@pytest.mark.parametrize("fixture", ["prepared", "designed"])
def test_device_batches_are_the_items_of_the_drawn_keys(fixture, request):
    """Batches gathered from the audio held as one tensor equal AudioItems' slices of the same keys, in
    order (one shared input with zero history, and one input per design setting)."""
    _, dm = request.getfixturevalue(fixture)
    loader, keys = dm.train_dataloader(), list(iter(dm.train_dataloader().sampler))
    batches = list(loader)
    assert len(batches) == len(loader) == -(-len(keys) // 4) and sum(len(b["setting"]) for b in batches) == len(keys)
    items = [loader.dataset[key] for key in keys]
    for name in ("input", "target", "controls", "setting"):
        assert torch.equal(torch.cat([b[name] for b in batches]), torch.stack([item[name] for item in items])), name
    # Segments at the very start of each input: their context is the zeros before the recording.
    first = [(setting, 0, 0) for setting in dm.settings_in("train")]
    at_start = SegmentBatches(dm.data, RandomSegments(first, SEGMENT, 5, seed=0), RF, batch_size=2)
    for batch in at_start:
        for i, setting in enumerate(batch["setting"].tolist()):
            expected = loader.dataset[(setting, 0, SEGMENT)]
            assert torch.equal(batch["input"][i], expected["input"]) and not batch["input"][i, 0, :RF - 1].any()
            assert torch.equal(batch["target"][i], expected["target"])


def test_training_uses_only_train_regions_of_training_settings(prepared):
    _, dm = prepared
    held = dm.settings_in("test")
    assert len(held) == 1 and dm.settings_in("train") == [i for i in range(3) if i not in held]
    train_spans = merged_spans(dm.data.regions, "shared", "train")
    keys = list(iter(dm.train_dataloader().sampler))
    assert {setting for setting, _, _ in keys} == set(dm.settings_in("train"))
    for setting, start, end in keys:
        assert any(s <= start and end <= e for s, e in train_spans)
    assert not {s for s, _, _ in dm.eval_spans("val")} & set(held)
    assert dm.split_spans("test", held[0]) == [(0, len(dm.data.inputs["shared"]))]  # held out: all of its audio


def test_eval_spans_cover_each_split_region_exactly_once(prepared):
    _, dm = prepared
    for split in ("val", "test"):
        for setting in dm.settings_in("train"):
            covered = np.zeros(len(dm.data.inputs["shared"]))
            for s, start, end in dm.eval_spans(split):
                if s == setting:
                    covered[start:end] += 1
            wanted = np.zeros_like(covered)
            for region in dm.data.regions:
                if region.split == split:
                    wanted[region.start:region.end] = 1
            assert wanted.sum() > 0 and np.array_equal(covered, wanted), (split, setting)
    assert {r.split for r in dm.data.regions} == {"train", "val", "test"}


def test_training_segments_are_seeded_and_reshuffled_each_epoch(prepared):
    cfg, dm = prepared
    first = dm.train_dataloader().sampler
    epoch0, epoch1 = list(iter(first)), list(iter(first))
    assert epoch0 != epoch1
    assert list(iter(ready(cfg).train_dataloader().sampler)) == epoch0
    other_seed = BassmanDataModule(cfg, RF, SEGMENT, 4, seed=123, progress=False)
    other_seed.setup()
    assert list(iter(other_seed.train_dataloader().sampler)) != epoch0


def test_splits_depend_only_on_seed_and_length():
    a = plan.assign_splits(40, (0.8, 0.1, 0.1), seed=0)
    assert a == plan.assign_splits(40, (0.8, 0.1, 0.1), seed=0)
    assert a != plan.assign_splits(40, (0.8, 0.1, 0.1), seed=1)
    assert (a.count("train"), a.count("val"), a.count("test")) == (32, 4, 4)
    assert plan.assign_splits(5, (0.9, 0.1, 0.0), seed=3).count("val") == 1
    assert "test" not in plan.assign_splits(5, (0.9, 0.1, 0.0), seed=3)
    with pytest.raises(ConfigError, match="audio.region_seconds"):
        plan.assign_splits(2, (0.8, 0.1, 0.1), seed=0)


def test_silent_regions_are_never_validation_or_test():
    audible = [i % 3 != 0 for i in range(30)]  # every third region is silence
    a = plan.assign_splits(30, (0.6, 0.2, 0.2), seed=0, audible=audible)
    assert (a.count("train"), a.count("val"), a.count("test")) == (18, 6, 6)
    assert all(name == "train" for name, heard in zip(a, audible) if not heard)
    with pytest.raises(ConfigError, match="carry signal"):
        plan.assign_splits(10, (0.6, 0.2, 0.2), seed=0, audible=[True] * 3 + [False] * 7)
    x = np.concatenate([np.zeros(1000), 0.1 * np.ones(1000), 1e-4 * np.ones(1000)]).astype(np.float32)
    assert plan.audible_regions(x, plan.plan_regions(len(x), 1000, 1.0)) == [False, True, False]


def test_manifest_records_what_was_built(prepared):
    cfg, dm = prepared
    m = dm.manifest
    assert dm.dataset_dir.name == m["hash"] == plan.plan_dataset(cfg).key
    assert json.loads((dm.dataset_dir / "manifest.json").read_text()) == m
    assert m["ngspice_version"] == spice.ngspice_version() and m["code_version"] == plan.code_version()
    assert m["inputs"]["shared"]["samples"] == round(0.6 * FS) and m["sample_rate"] == FS
    assert [s["netlist_hash"] for s in m["settings"]] == [netlist_hash(render_netlist(p)) for p in dm.settings]
    assert [s["group"] for s in m["settings"]] == [s.group for s in plan_settings(cfg)] == dm.groups
    regions = [(r.start, r.end) for r in dm.data.regions]
    assert regions[0][0] == 0 and regions[-1][1] == m["inputs"]["shared"]["samples"]
    assert all(a[1] == b[0] for a, b in zip(regions, regions[1:]))
    trained = dm.settings_in("train")
    peaks = [float(np.abs(t).max()) for t in dm.data.targets]
    assert max(peaks[i] for i in trained) == pytest.approx(1.0)  # one scale, from the training settings
    for record, target in zip(m["settings"], dm.data.targets):
        assert target.max() * m["target_scale_volts"] == pytest.approx(target.max() * dm.data.target_scale_volts)
        assert float(np.abs(target).max()) == pytest.approx(record["peak_volts"] / m["target_scale_volts"], rel=1e-5)
        assert abs(float(target.mean())) < 0.1  # DC-blocked


def test_files_are_written_with_the_users_umask(prepared):
    _, dm = prepared
    mask = os.umask(0)
    os.umask(mask)
    for path in [dm.dataset_dir, *dm.dataset_dir.iterdir(), *(dm.dataset_dir.parent / "chunks").iterdir()]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o777 if path.is_dir() else 0o666) & ~mask, path


def test_second_prepare_is_a_cache_hit_without_simulation(prepared, monkeypatch):
    cfg, dm = prepared
    monkeypatch.setattr(spice, "simulate_chunk", no_simulation)
    assert ds.prepare_dataset(cfg, progress=False) == dm.dataset_dir
    assert ds.prepare_dataset(dataclasses.replace(cfg, workers=1), progress=False) == dm.dataset_dir
    # split and DC-block changes make a new dataset from the cached chunks
    new = ds.prepare_dataset(dataclasses.replace(cfg, audio=dataclasses.replace(cfg.audio, region_split=(0.6, 0.2, 0.2), dc_block_hz=10.0)), progress=False)
    assert new != dm.dataset_dir and (new / "manifest.json").is_file()
    assert not [p for p in new.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def counting_chunks(monkeypatch, fail_after: int | None = None) -> list:
    calls = []
    real = spice.simulate_chunk

    def counted(chunk):
        if fail_after is not None and len(calls) >= fail_after:
            raise spice.SpiceError("killed (test)")
        calls.append(chunk.pots)
        return real(chunk)

    monkeypatch.setattr(spice, "simulate_chunk", counted)
    return calls


def test_adding_a_setting_simulates_only_that_setting(prepared, monkeypatch):
    cfg, _ = prepared
    calls = counting_chunks(monkeypatch)
    extra = PotSettings(volume=0.2)
    path = ds.prepare_dataset(dataclasses.replace(cfg, knobs=dataclasses.replace(cfg.knobs, settings=cfg.knobs.settings + (extra,))), progress=False)
    assert set(calls) == {extra} and len(calls) == 2  # its two chunks
    assert json.loads((path / "manifest.json").read_text())["settings"][2]["pots"]["volume"] == 0.2


def test_a_killed_preparation_resumes_from_its_finished_chunks(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, workers=1)  # 3 settings x 2 chunks
    calls = counting_chunks(monkeypatch, fail_after=4)
    with pytest.raises(spice.SpiceError, match="killed"):
        ds.prepare_dataset(cfg, progress=False)
    assert len(calls) == 4 and not (plan.plan_dataset(cfg).path / "manifest.json").exists()
    monkeypatch.undo()
    calls = counting_chunks(monkeypatch)
    ds.prepare_dataset(cfg, progress=False)
    assert len(calls) == 2  # only the chunks the killed run had not finished


def test_a_damaged_chunk_is_simulated_again(prepared, monkeypatch):
    cfg, dm = prepared
    for chunk in (dm.dataset_dir.parent / "chunks").glob("*.npy"):
        chunk.write_bytes(chunk.read_bytes()[:-8] + b"\0" * 8)  # same size, other bytes: only the hash tells
    calls = counting_chunks(monkeypatch)
    ds.prepare_dataset(dataclasses.replace(cfg, audio=dataclasses.replace(cfg.audio, dc_block_hz=7.0)), progress=False)
    assert len(calls) == 6  # every chunk of its three settings


def test_very_different_treble_gives_different_targets(prepared):
    _, dm = prepared
    dark, bright = (dm.data.targets[dm.settings.index(p)].astype(np.float64) for p in (DARK, BRIGHT))
    freqs = np.fft.rfftfreq(len(dark), 1 / FS)

    def treble_share(y):
        power = np.abs(np.fft.rfft(y)) ** 2
        return power[freqs > 2000].sum() / power.sum()

    assert np.sqrt(np.mean((dark - bright) ** 2)) > 0.05 * np.sqrt(np.mean(bright**2))
    assert treble_share(bright) > 10 * treble_share(dark)


def test_a_design_gives_each_setting_its_own_audio_and_group(designed):
    cfg, dm = designed
    assert dm.groups == ["val", "train", "train", "train", "train", "test"]
    inputs = [dm.data.inputs[dm.data.input_of[i]] for i in range(6)]
    assert len({x.tobytes() for x in inputs}) == 6 and all(len(x) == round(0.4 * FS) for x in inputs)
    val_setting, test_setting = dm.settings_in("val")[0], dm.settings_in("test")[0]
    assert dm.split_spans("val", val_setting) == [(0, len(inputs[val_setting]))]
    assert dm.split_spans("train", val_setting) == [] and dm.split_spans("val", test_setting) == []
    assert {s for s, _, _ in dm.eval_spans("val")} >= {val_setting}
    assert test_setting not in {s for s, _, _ in dm.eval_spans("val")}
    assert {s for s, _, _ in iter(dm.train_dataloader().sampler)} <= set(dm.settings_in("train"))
    # regions: the training settings' inputs, pooled, a split share of them held back for seen-setting val/test
    assert {r.input for r in dm.data.regions} == {dm.data.input_of[i] for i in dm.settings_in("train")}
    assert {r.split for r in dm.data.regions} == {"train", "val", "test"}
    assert dm.settings_in("val", "test") == sorted([val_setting, test_setting])  # no other unseen setting


def test_example_returns_contiguous_audio_with_context(prepared):
    _, dm = prepared
    inp, target, controls = dm.example("val", 0, seconds=1.0)
    assert len(inp) == len(target) + RF - 1 and len(target) > 0
    start = int(np.flatnonzero(np.all(
        np.lib.stride_tricks.sliding_window_view(dm.data.targets[0], len(target)) == target, axis=1))[0])
    assert np.array_equal(inp[RF - 1:], dm.data.inputs["shared"][start:start + len(target)])
    assert all(r.split == "val" for r in dm.data.regions if r.start < start + len(target) and r.end > start)
    assert controls.tolist() == pytest.approx(dm.settings[0].as_tuple())
    with pytest.raises(AmpStudyError, match="test group"):
        dm.example("val", dm.settings_in("test")[0], 1.0)


def test_setup_without_prepare_says_what_to_do(tmp_path):
    dm = BassmanDataModule(tiny_config(tmp_path), RF, SEGMENT, 4)
    with pytest.raises(AmpStudyError, match="ampstudy data"):
        dm.setup("fit")


def test_config_problems_fail_before_any_simulation(prepared, tmp_path, monkeypatch):
    monkeypatch.setattr(spice, "simulate_chunk", no_simulation)
    with pytest.raises(ConfigError, match="knobs.held_out_settings"):
        ds.prepare_dataset(tiny_config(tmp_path, knobs={"held_out_settings": 3}), progress=False)
    with pytest.raises(ConfigError, match="audio.region_seconds"):
        ds.prepare_dataset(tiny_config(tmp_path, audio={"region_seconds": 0.3}), progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["locks"]  # nothing built, nothing half-written
    too_long = BassmanDataModule(prepared[0], RF, segment_samples=10_000, batch_size=4)
    too_long.setup()
    with pytest.raises(AmpStudyError, match="lower segment_samples"):
        too_long.train_dataloader()


def test_user_wavs_are_appended_after_a_gap(tmp_path):
    from datamodules.audio_io import save_wav
    wav = (0.3 * np.sin(np.arange(8000) / 10)).astype(np.float32)
    save_wav(tmp_path / "di.wav", wav, FS)
    cfg = tiny_config(tmp_path, audio={"wav_files": (str(tmp_path / "di.wav"),)})
    x, sources = plan.shared_input(cfg)
    assert [s["kind"] for s in sources] == ["synth", "wav"]
    start = sources[1]["start"]
    assert start == round(0.6 * FS) + round(plan.WAV_GAP_SECONDS * FS)
    assert np.array_equal(x[start:], wav) and not x[start - 100:start].any()
    moved = tiny_config(tmp_path / "elsewhere", audio={"wav_files": (str(tmp_path / ".." / tmp_path.name / "di.wav"),)})
    assert plan.plan_dataset(moved).key == plan.plan_dataset(cfg).key  # paths are not content
    save_wav(tmp_path / "di.wav", 0.5 * wav, FS)
    assert plan.dataset_hash(cfg, tuple(plan_settings(cfg))) != plan.plan_dataset(moved).key  # new bytes, new hash


class TinyModel(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 1, RF)

    def training_step(self, batch, _):
        return torch.mean((self.conv(batch["input"]) - batch["target"]) ** 2)

    def validation_step(self, batch, _):
        self.log("val_loss", torch.mean((self.conv(batch["input"]) - batch["target"]) ** 2))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_lightning_trainer_runs_prepare_setup_and_loops(prepared, monkeypatch):
    cfg, _ = prepared
    monkeypatch.setattr(spice, "simulate_chunk", no_simulation)
    dm = BassmanDataModule(cfg, RF, SEGMENT, batch_size=4, progress=False)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu")
    trainer.fit(TinyModel(), datamodule=dm)
    assert trainer.global_step == 2 and dm.manifest is not None

