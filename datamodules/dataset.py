"""The cached SPICE dataset: input audio, one simulated target per knob setting, groups and regions.

Layout under `DataConfig.data_dir`:

    <dataset hash>/input_<key>.wav    each input once (float32, full scale = input_full_scale_volts)
    <dataset hash>/target_<i>.wav     setting i: DC-blocked volts / the target scale
    <dataset hash>/manifest.json      everything needed to trust and reuse the files, with the size
                                      and sha256 of each of them
    chunks/<hash>.npy (+ .sha256)     raw ngspice output of one chunk (at the oversampled rate),
                                      shared by all datasets
    locks/<dataset hash>.lock         held by the one process building that dataset

The dataset folder appears only once complete (built in a temporary folder, then renamed), so a
reader never sees half a dataset; a killed preparation resumes from the chunks already in
`chunks/`, whose content is checked by sha256 when read. Two processes asking for the same dataset
build it once: the second waits on the lock (saying so) and uses the first one's result. Every
file of a dataset is checked against the manifest's size and sha256 when loaded (hashed once per
process); a damaged one is refused with the command that rebuilds it, `ampstudy data`, which
rebuilds the folder from the chunk cache (no simulation when the chunks are there).

The SPICE chain is band-limited: the DI is interpolated to `oversampling` x fs, simulated, and
decimated through an anti-alias filter (datamodules/resampling.py); datasets of format 4 were
point-sampled at fs and are still read where they are referenced, but a config of this version
hashes to a new folder (the format is part of the hash), so new runs train on the new data. The target scale is the peak of the
DC-blocked output over the training-group settings, one number for all settings, so the level
differences the volume knob makes stay learnable and no test setting influences training targets.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal
from tqdm import tqdm

from datamodules import resampling, spice
from datamodules.audio_io import read_float_wav, save_wav
from datamodules.config import DataConfig, PotSettings
from datamodules.dataset_plan import (
    DATASET_FORMAT,
    READABLE_FORMATS,
    DatasetPlan,
    Region,
    build_audio,
    code_version,
    plan_dataset,
)
from datamodules.netlist import netlist_hash, render_netlist
from foundation.configs import from_mapping, to_dict
from foundation.errors import AmpStudyError
from foundation.files import current_umask, file_lock, probe_writable, write_atomically
from foundation.knobs import KNOB_NAMES

_prepared_this_process: dict[DataConfig, Path] = {}
_verified_this_process: set[tuple[str, int, int]] = set()  # (file, size, mtime_ns) whose sha256 matched
HASH_BLOCK = 1 << 22


class DamagedDataset(AmpStudyError):
    """A dataset file is missing or differs from its manifest; the message names it and the repair."""


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


def prepare_dataset(cfg: DataConfig, progress: bool = True, *, repair: bool = False) -> Path:
    """Build (or find and check) the dataset for cfg and return its folder. The only expensive step.

    Idempotent and cheap when the dataset exists (once per process it is not even looked up again).
    A damaged dataset raises DamagedDataset, or with `repair` is rebuilt from the chunk cache.
    One process at a time builds a dataset; the others wait for it, then use its result.
    """
    if cfg in _prepared_this_process and (_prepared_this_process[cfg] / "manifest.json").is_file():
        return _prepared_this_process[cfg]
    plan = plan_dataset(cfg)
    if not _ready(plan.path, repair, progress):
        def waiting() -> None:
            print(f"another process is building dataset {plan.key} in {cfg.data_dir}: waiting for it to "
                  "finish, then using its result", file=sys.stderr, flush=True)

        _check_writable(Path(cfg.data_dir))
        with file_lock(Path(cfg.data_dir) / "locks" / f"{plan.key}.lock", timeout=None, on_wait=waiting):
            if not _ready(plan.path, repair, progress):  # the process we waited for may have built it
                _build(plan, progress)
    _prepared_this_process[cfg] = plan.path
    return plan.path


def _check_writable(data_dir: Path) -> None:
    """The dataset is to be built in `data_dir`: it must exist (or be creatable) and take new files."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe_writable(data_dir)
    except OSError as err:
        raise AmpStudyError(f"data.data_dir {data_dir}: cannot build a dataset there ({err.strerror or err}); "
                            "choose another folder (ampstudy data --data-dir DIR, or data_dir in the [data] "
                            "table)") from None


def _ready(path: Path, repair: bool, progress: bool) -> bool:
    """Whether a complete, undamaged dataset is at path (a damaged one raises unless `repair`)."""
    if not path.exists():
        return False
    try:
        verify_dataset(path)
    except DamagedDataset as err:
        if not repair:
            raise
        if progress:
            print(f"{err.args[0].split(';')[0]}; rebuilding the dataset from the chunk cache", file=sys.stderr,
                  flush=True)
        return False
    return True


def repair_hint(path: Path) -> str:
    return f"`ampstudy data --dataset {path}` rebuilds it from the chunk cache"


def file_record(path: Path) -> dict[str, Any]:
    """{"bytes": size, "sha256": hex digest} of a file, as the manifest lists it."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def read_manifest(path: Path) -> dict[str, Any]:
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        if path.is_dir() and any(path.iterdir()):
            raise DamagedDataset(f"{manifest_path}: missing; {repair_hint(path)}")
        raise AmpStudyError(f"{path}: not a prepared dataset (no manifest.json); run `ampstudy data` first")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise DamagedDataset(f"{manifest_path}: not readable JSON; {repair_hint(path)}") from None
    if manifest.get("format") not in READABLE_FORMATS:
        raise AmpStudyError(f"{path}: dataset format {manifest.get('format')} is not one this version reads "
                            f"({', '.join(map(str, READABLE_FORMATS))}); delete the folder and prepare it again")
    return manifest


def verify_dataset(path: str | Path, manifest: dict[str, Any] | None = None) -> None:
    """Check every file of the dataset at `path` against its manifest's size and sha256.

    Sizes are checked on every call, contents once per process and file (again if the file changes).
    A dataset of format 4 (before checksums) has nothing to check against and passes.
    """
    path = Path(path)
    manifest = read_manifest(path) if manifest is None else manifest
    for name, record in manifest.get("files", {}).items():
        file = path / name
        try:
            stat = file.stat()
        except FileNotFoundError:
            raise DamagedDataset(f"{file}: missing; {repair_hint(path)}") from None
        if stat.st_size != record["bytes"]:
            raise DamagedDataset(f"{file}: {stat.st_size} bytes where the manifest says {record['bytes']}; "
                                 f"{repair_hint(path)}")
        key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
        if key in _verified_this_process:
            continue
        if file_record(file)["sha256"] != record["sha256"]:
            raise DamagedDataset(f"{file}: its content differs from the manifest's sha256; {repair_hint(path)}")
        _verified_this_process.add(key)


def config_of_dataset(path: str | Path) -> DataConfig:
    """The DataConfig that built the dataset at `path` (its data_dir: the folder's parent), checked
    to hash to that folder, so `ampstudy data --dataset PATH` rebuilds exactly it."""
    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        table = manifest["data_config"]
    except (OSError, ValueError, KeyError):
        raise AmpStudyError(f"{path}: its manifest.json is missing or unreadable, so the dataset's settings are "
                            "unknown; delete the folder and run `ampstudy data` with the settings that made it") from None
    cfg = from_mapping(DataConfig, {**table, "data_dir": str(path.parent)}, "data_config")
    if plan_dataset(cfg).path.resolve() != path.resolve():
        raise AmpStudyError(f"{path}: built by another version of ampstudy (format {manifest.get('format')}), "
                            "which this one cannot rebuild; delete it and run `ampstudy data` again")
    return cfg


def spice_jobs(plan: DatasetPlan, audio: Any) -> list[spice.SpiceJob]:
    """One ngspice job per knob setting: the input it plays, in volts at the amp's input jack."""
    return [spice.SpiceJob(audio.inputs[s.input].astype(np.float64) * plan.cfg.audio.input_full_scale_volts, s.pots)
            for s in plan.settings]


def _build(plan: DatasetPlan, progress: bool) -> None:
    started = time.perf_counter()
    cfg, fs = plan.cfg, plan.cfg.sample_rate
    audio = build_audio(plan)  # fails on an unusable config before any simulation
    jobs = spice_jobs(plan, audio)
    with tqdm(total=round(sum(len(j.x_volts) for j in jobs) / fs, 1), unit="s", unit_scale=False,
              disable=not progress, desc="SPICE (audio s)") as bar:
        def report(p: spice.SpiceProgress) -> None:
            bar.n = round(p.done_seconds, 1)
            bar.set_postfix_str(f"settings {p.jobs_done}/{p.jobs_total}")
            bar.refresh()

        volts = spice.simulate_many(jobs, fs, oversampling=cfg.simulation.oversampling,
                                    max_step_fraction=cfg.simulation.max_step_fraction,
                                    chunk_seconds=cfg.simulation.chunk_seconds, warmup_seconds=cfg.simulation.warmup_seconds,
                                    workers=cfg.workers, progress=report, cache_dir=Path(cfg.data_dir) / "chunks")
    blocked = [dc_block(v, fs, cfg.audio.dc_block_hz) for v in volts]
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
            "input_full_scale_volts": cfg.audio.input_full_scale_volts, "control_names": list(KNOB_NAMES),
            "simulation": {"oversampling": cfg.simulation.oversampling, "simulated_rate": fs * cfg.simulation.oversampling,
                           "max_step_seconds": cfg.simulation.max_step_fraction / fs,
                           "anti_alias": "none (point-sampled)" if cfg.simulation.oversampling == 1 else
                           f"linear-phase Kaiser FIR, passband {resampling.PASSBAND_EDGE:g} fs, stopband "
                           f"{resampling.STOPBAND_EDGE:g} fs, {resampling.STOPBAND_ATTENUATION_DB:g} dB, "
                           f"{len(resampling.lowpass(cfg.simulation.oversampling))} taps"},
            "data_config": {k: v for k, v in to_dict(cfg).items() if k not in ("data_dir", "workers")},
            "inputs": {key: {"file": input_files[key], "samples": len(x), "seconds": len(x) / fs,
                             "sha256": audio.input_sha256[key], "sources": audio.sources[key]}
                       for key, x in audio.inputs.items()},
            "target_processing": {"dc_block_hz": cfg.audio.dc_block_hz,
                                  "scale": "peak of |DC-blocked volts| over the training-group settings"},
            "target_scale_volts": scale,  # volts = target * scale
            "settings": records,
            "regions": [{"input": r.input, "start": r.start, "end": r.end, "split": r.split} for r in audio.regions],
            "wall_seconds": round(time.perf_counter() - started, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        manifest["files"] = {f.name: file_record(f) for f in sorted(tmp.iterdir())}
        write_atomically(tmp / "manifest.json", json.dumps(manifest, indent=1).encode())
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it private; a data_dir may be shared
        if plan.path.exists():  # a damaged copy (the build lock is held): set aside, then dropped
            damaged = Path(tempfile.mkdtemp(dir=cfg.data_dir, prefix=f".{plan.key}.damaged."))
            os.rename(plan.path, damaged / plan.key)
            os.rename(tmp, plan.path)
            shutil.rmtree(damaged, ignore_errors=True)
        else:
            os.rename(tmp, plan.path)
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
    """Read a prepared dataset folder (inputs, all targets, manifest), its files checked first."""
    path = Path(path)
    manifest = read_manifest(path)
    verify_dataset(path, manifest)
    inputs = {key: read_float_wav(path / info["file"])[0] for key, info in manifest["inputs"].items()}
    records = manifest["settings"]
    targets = [read_float_wav(path / s["file"])[0] for s in records]
    if any(len(t) != len(inputs[s["input"]]) for t, s in zip(targets, records)):
        raise DamagedDataset(f"{path}: target lengths differ from their inputs; {repair_hint(path)}")
    return LoadedDataset(path, manifest, inputs, targets, [PotSettings(**s["pots"]) for s in records],
                         [s["group"] for s in records], [s["input"] for s in records],
                         [Region(r["input"], r["start"], r["end"], r["split"]) for r in manifest["regions"]])
