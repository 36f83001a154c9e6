"""The cached SPICE dataset: input audio, one simulated target per knob setting, groups and regions.

Layout under `DataConfig.data_dir`:

    <dataset hash>/input_<key>.wav    each input once (float32, full scale = input_full_scale_volts)
    <dataset hash>/target_<i>.wav     setting i: DC-blocked volts / the target scale
    <dataset hash>/manifest.json      everything needed to trust and reuse the files
    chunks/<hash>.npy (+ .sha256)     raw ngspice output of one chunk, shared by all datasets

The dataset folder appears only once complete (built in a temporary folder, then renamed), so a
reader never sees half a dataset; a killed preparation resumes from the chunks already in
`chunks/`, whose content is checked by sha256 when read. The target scale is the peak of the
DC-blocked output over the training-group settings, one number for all settings, so the level
differences the volume knob makes stay learnable and no test setting influences training targets.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal
from tqdm import tqdm

from datamodules import spice, spice_pool
from datamodules.audio_io import read_float_wav, save_wav
from datamodules.config import DataConfig, PotSettings
from datamodules.dataset_plan import DATASET_FORMAT, DatasetPlan, Region, build_audio, code_version, plan_dataset
from datamodules.netlist import netlist_hash, render_netlist
from foundation.configs import to_dict
from foundation.errors import AmpStudyError
from foundation.files import current_umask, write_atomically
from foundation.knobs import KNOB_NAMES

_prepared_this_process: dict[DataConfig, Path] = {}


def dc_block(volts: np.ndarray, fs: int, dc_block_hz: float) -> tuple[np.ndarray, float]:
    """(DC-blocked volts, DC removed volts).

    The resting output (first sample: every input starts silent) is subtracted, then a causal
    first-order high-pass at dc_block_hz (0 = off) models the next stage's coupling capacitor,
    so bias shifts under heavy playing decay as they would in the amp.
    """
    dc = float(volts[0])
    y = volts - dc
    if dc_block_hz > 0:
        b, a = signal.butter(1, dc_block_hz, btype="highpass", fs=fs)
        y = signal.lfilter(b, a, y)
    return y, dc


def common_scale(blocked: list[np.ndarray]) -> float:
    """One peak scale for every knob setting, so level differences (the volume knob) stay learnable."""
    scale = max(float(np.abs(y).max()) for y in blocked)
    if not np.isfinite(scale) or scale <= 0:
        raise AmpStudyError("the simulated amp output is silent or not finite; check the netlist "
                            "and that the input is not silent")
    return scale


def prepare_dataset(cfg: DataConfig, progress: bool = True) -> Path:
    """Build (or find) the dataset for cfg and return its folder. The only expensive step.

    Idempotent and cheap when the dataset exists (once per process it is not even looked up again).
    """
    if cfg in _prepared_this_process and (_prepared_this_process[cfg] / "manifest.json").is_file():
        return _prepared_this_process[cfg]
    plan = plan_dataset(cfg)
    if not (plan.path / "manifest.json").is_file():
        _build(plan, progress)
    _prepared_this_process[cfg] = plan.path
    return plan.path


def spice_jobs(plan: DatasetPlan, audio: Any) -> list[spice_pool.SpiceJob]:
    """One ngspice job per knob setting: the input it plays, in volts at the amp's input jack."""
    return [spice_pool.SpiceJob(audio.inputs[s.input].astype(np.float64) * plan.cfg.input_full_scale_volts, s.pots)
            for s in plan.settings]


def _build(plan: DatasetPlan, progress: bool) -> None:
    started = time.perf_counter()
    cfg, fs = plan.cfg, plan.cfg.sample_rate
    audio = build_audio(plan)  # fails on an unusable config before any simulation
    jobs = spice_jobs(plan, audio)
    with tqdm(total=round(sum(len(j.x_volts) for j in jobs) / fs, 1), unit="s", unit_scale=False,
              disable=not progress, desc="SPICE (audio s)") as bar:
        def report(p: spice_pool.SpiceProgress) -> None:
            bar.n = round(p.done_seconds, 1)
            bar.set_postfix_str(f"settings {p.jobs_done}/{p.jobs_total}")
            bar.refresh()

        volts = spice_pool.simulate_many(jobs, fs, max_step_fraction=cfg.max_step_fraction,
                                    chunk_seconds=cfg.chunk_seconds, warmup_seconds=cfg.warmup_seconds,
                                    workers=cfg.workers, progress=report, cache_dir=Path(cfg.data_dir) / "chunks")
    blocked = [dc_block(v, fs, cfg.dc_block_hz) for v in volts]
    scale = common_scale([y for (y, _), s in zip(blocked, plan.settings) if s.group == "train"])
    Path(cfg.data_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cfg.data_dir, prefix=f".{plan.key}."))
    try:
        input_files = {key: f"input_{key}.wav" for key in audio.inputs}
        for key, x in audio.inputs.items():
            save_wav(tmp / input_files[key], x, fs)
        records = []
        for i, (setting, (y, dc)) in enumerate(zip(plan.settings, blocked)):
            save_wav(tmp / f"target_{i}.wav", (y / scale).astype(np.float32), fs)
            records.append({
                "index": i, "label": setting.pots.label(), "pots": to_dict(setting.pots), "group": setting.group,
                "kind": setting.kind, "input": setting.input, "netlist_hash": netlist_hash(render_netlist(setting.pots)),
                "file": f"target_{i}.wav", "dc_removed_volts": dc, "peak_volts": float(np.abs(y).max()),
            })
        manifest = {
            "format": DATASET_FORMAT, "code_version": code_version(), "hash": plan.key,
            "ngspice_version": spice.ngspice_version(), "seed": cfg.seed, "sample_rate": fs,
            "input_full_scale_volts": cfg.input_full_scale_volts, "control_names": list(KNOB_NAMES),
            "data_config": {k: v for k, v in to_dict(cfg).items() if k not in ("data_dir", "workers")},
            "inputs": {key: {"file": input_files[key], "samples": len(x), "seconds": len(x) / fs,
                             "sha256": audio.input_sha256[key], "sources": audio.sources[key]}
                       for key, x in audio.inputs.items()},
            "target_processing": {"dc_block_hz": cfg.dc_block_hz,
                                  "scale": "peak of |DC-blocked volts| over the training-group settings"},
            "target_scale_volts": scale,  # volts = target * scale
            "settings": records,
            "regions": [{"input": r.input, "start": r.start, "end": r.end, "split": r.split} for r in audio.regions],
            "wall_seconds": round(time.perf_counter() - started, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_atomically(tmp / "manifest.json", json.dumps(manifest, indent=1).encode())
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it private; a data_dir may be shared
        try:
            os.rename(tmp, plan.path)
        except OSError:  # another process finished the same dataset first: keep theirs
            if not (plan.path / "manifest.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def locate_dataset(cfg: DataConfig) -> Path:
    """Folder of the prepared dataset for cfg (no simulation), or AmpStudyError saying how to make it."""
    path = plan_dataset(cfg).path
    if not (path / "manifest.json").is_file():
        raise AmpStudyError(f"no prepared dataset for this data config at {path}; run `ampstudy data` with the "
                            "same settings, or call BassmanDataModule.prepare_data() first")
    return path


@dataclass(frozen=True)
class LoadedDataset:
    path: Path
    manifest: dict[str, Any]
    inputs: dict[str, np.ndarray]  # input key -> (N,) float32
    targets: list[np.ndarray]  # per setting, float32, as long as its input
    settings: list[PotSettings]
    groups: list[str]  # per setting: train | val | test | response
    input_of: list[str]  # per setting: the key of the input it plays
    regions: list[Region]  # split regions of the training settings' inputs

    @property
    def target_scale_volts(self) -> float:
        return float(self.manifest["target_scale_volts"])


def load_dataset(path: str | Path) -> LoadedDataset:
    """Read a prepared dataset folder (inputs, all targets, manifest)."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise AmpStudyError(f"{path}: not a prepared dataset (no manifest.json); run `ampstudy data` first")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != DATASET_FORMAT:
        raise AmpStudyError(f"{path}: dataset format {manifest.get('format')} is not {DATASET_FORMAT}; "
                            "delete the folder and prepare it again")
    inputs = {key: read_float_wav(path / info["file"])[0] for key, info in manifest["inputs"].items()}
    records = manifest["settings"]
    targets = [read_float_wav(path / s["file"])[0] for s in records]
    if any(len(t) != len(inputs[s["input"]]) for t, s in zip(targets, records)):
        raise AmpStudyError(f"{path}: target lengths differ from their inputs; delete the folder and prepare again")
    return LoadedDataset(path, manifest, inputs, targets, [PotSettings(**s["pots"]) for s in records],
                         [s["group"] for s in records], [s["input"] for s in records],
                         [Region(r["input"], r["start"], r["end"], r["split"]) for r in manifest["regions"]])
