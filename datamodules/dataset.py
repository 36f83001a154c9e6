"""The cached SPICE dataset: input audio, one simulated target per knob setting, regions and splits.

Layout under `DataConfig.data_dir`:

    <dataset hash>/input.wav          input, float32, full scale = input_full_scale_volts
    <dataset hash>/target_<i>.wav     setting i: DC-blocked, divided by the peak over all settings
    <dataset hash>/manifest.json      everything needed to trust and reuse the files
    targets/<target hash>.npy         raw simulated output volts (float64), shared by datasets

The dataset hash covers the netlist of every setting, the input audio bytes, every DataConfig
field that changes content (not data_dir, workers or wav_files paths, whose bytes are covered)
and the code version, so a config change can never reuse stale files. Raw targets are keyed by
netlist + input + SPICE settings only: adding a knob setting or changing the split, the DC
block or the seed of held-out settings does not re-run ngspice for the others.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal
from tqdm import tqdm

import foundation
from datamodules import spice
from datamodules.audio_io import load_wav, read_float_wav, save_wav
from datamodules.config import DataConfig, PotSettings
from datamodules.corpus import synth_corpus
from datamodules.knob_settings import STREAM_SPLIT, held_out_indices, resolve_settings, seeded_rng
from datamodules.netlist import netlist_hash, render_netlist
from foundation.configs import to_dict
from foundation.errors import AmpStudyError, ConfigError
from foundation.knobs import KNOB_NAMES

DATASET_FORMAT = 3  # bump when the files or their processing change meaning
WAV_GAP_SECONDS = 0.1  # silence before each user wav: the amp settles between recordings
NOT_CONTENT_FIELDS = ("data_dir", "workers", "wav_files")


def code_version() -> str:
    return f"{foundation.__version__}+ds{DATASET_FORMAT}"


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def build_input(cfg: DataConfig) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Input audio (float32 full scale) and where each part came from: synth corpus, then wavs."""
    fs = cfg.sample_rate
    parts: list[np.ndarray] = []
    sources: list[dict[str, Any]] = []
    start = 0
    if cfg.corpus_seconds > 0:
        corpus = synth_corpus(cfg.corpus_seconds, fs, cfg.seed)
        parts.append(corpus)
        sources.append({"kind": "synth", "start": 0, "samples": len(corpus), "seed": cfg.seed})
        start = len(corpus)
    for path in cfg.wav_files:
        wav = load_wav(path, fs)
        gap = np.zeros(int(WAV_GAP_SECONDS * fs), dtype=np.float32)
        parts += [gap, wav]
        start += len(gap)
        sources.append({"kind": "wav", "path": str(path), "start": start, "samples": len(wav),
                        "sha256": hashlib.sha256(wav.tobytes()).hexdigest()})
        start += len(wav)
    return np.concatenate(parts).astype(np.float32), sources


def dataset_hash(cfg: DataConfig, settings: list[PotSettings], input_sha256: str) -> str:
    content = {k: v for k, v in to_dict(cfg).items() if k not in NOT_CONTENT_FIELDS}
    netlists = [netlist_hash(render_netlist(p)) for p in settings]
    return _sha256_json({"code": code_version(), "config": content, "netlists": netlists,
                         "input": input_sha256})[:24]


def target_hash(cfg: DataConfig, pots: PotSettings, input_sha256: str) -> str:
    """Key of a raw simulated target: only what changes ngspice's output."""
    return _sha256_json({
        "code": code_version(), "netlist": netlist_hash(render_netlist(pots)), "input": input_sha256,
        "fs": cfg.sample_rate, "volts": cfg.input_full_scale_volts,
        "max_step_fraction": cfg.max_step_fraction, "chunk_seconds": cfg.chunk_seconds,
        "warmup_seconds": cfg.warmup_seconds,
    })[:32]


def plan_regions(n_samples: int, fs: int, region_seconds: float) -> list[tuple[int, int]]:
    """[start, end) of consecutive regions of region_seconds; the last one takes the remainder."""
    size = max(1, int(round(region_seconds * fs)))
    count = n_samples // size
    bounds = [(i * size, (i + 1) * size) for i in range(count)]
    if bounds:
        bounds[-1] = (bounds[-1][0], n_samples)
    return bounds


def audible_regions(x: np.ndarray, regions: list[tuple[int, int]], min_rms_dbfs: float = -45.0) -> list[bool]:
    """Whether each region's input carries signal: a near-silent region would make its ESR
    (error energy / target energy) meaningless, so it may only be used for training."""
    floor = 10 ** (min_rms_dbfs / 20)
    return [float(np.sqrt(np.mean(np.square(x[a:b], dtype=np.float64)))) >= floor for a, b in regions]


def assign_splits(n_regions: int, split: tuple[float, float, float], seed: int,
                  audible: list[bool] | None = None) -> list[str]:
    """Split name per region: a seeded permutation, >= 1 train and val region, test only if share > 0.

    Validation and test regions are taken from the end of the permutation, skipping regions that
    are not `audible`; with every region audible this is a plain seeded permutation split.
    """
    n_val = max(1, int(round(split[1] * n_regions)))
    n_test = max(1, int(round(split[2] * n_regions))) if split[2] > 0 else 0
    n_train = n_regions - n_val - n_test
    audible = [True] * n_regions if audible is None else list(audible)
    if n_train < 1:
        needed = 2 + (split[2] > 0)
        raise ConfigError(f"region_seconds: the audio holds only {n_regions} region(s), need at least "
                          f"{max(needed, n_regions + 1 - n_train)} for split {split}; lower region_seconds "
                          "or add audio (corpus_seconds, wav_files)")
    if sum(audible) < n_val + n_test:
        raise ConfigError(f"region_seconds: only {sum(audible)} of {n_regions} regions carry signal, need "
                          f"{n_val + n_test} for validation and test; add audio or change region_seconds")
    order = seeded_rng(seed, STREAM_SPLIT).permutation(n_regions)
    assigned = ["train"] * n_regions
    wanted = ["test"] * n_test + ["val"] * n_val
    for region in order[::-1]:
        if not wanted:
            break
        if audible[int(region)]:
            assigned[int(region)] = wanted.pop(0)
    return assigned


def dc_block(volts: np.ndarray, fs: int, dc_block_hz: float) -> tuple[np.ndarray, float]:
    """(DC-blocked volts, DC removed volts).

    The resting output (first sample: the input starts silent) is subtracted, then a causal
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


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def simulated_target(cfg: DataConfig, pots: PotSettings, x: np.ndarray, input_sha256: str,
                     on_chunk: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Raw output volts for one setting: from data_dir/targets/ if cached, else ngspice.

    on_chunk(done, total) follows spice.simulate's progress protocol.
    """
    cache_dir = Path(cfg.data_dir) / "targets"
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = target_hash(cfg, pots, input_sha256)
    npy, meta_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if npy.is_file() and meta_path.is_file():
        volts = np.load(npy)
        if len(volts) == len(x):
            return volts, {**json.loads(meta_path.read_text()), "cache_hit": True, "key": key}
    start = time.perf_counter()
    volts = spice.simulate(x.astype(np.float64) * cfg.input_full_scale_volts, cfg.sample_rate, pots,
                           max_step_fraction=cfg.max_step_fraction, chunk_seconds=cfg.chunk_seconds,
                           warmup_seconds=cfg.warmup_seconds, workers=cfg.workers, progress=on_chunk)
    meta = {"simulate_seconds": round(time.perf_counter() - start, 3),
            "ngspice_version": spice.ngspice_version(), "pots": to_dict(pots)}
    _save_npy_atomic(npy, volts)
    meta_path.write_text(json.dumps(meta, indent=1))  # written last: marks the entry complete
    return volts, {**meta, "cache_hit": False, "key": key}


@dataclass(frozen=True)
class DatasetPlan:
    """Everything about a dataset that is known before simulating (cheap to compute)."""

    cfg: DataConfig
    settings: list[PotSettings]
    held_out: list[int]
    input: np.ndarray
    sources: list[dict[str, Any]]
    input_sha256: str
    key: str

    @property
    def path(self) -> Path:
        return Path(self.cfg.data_dir) / self.key


def plan_dataset(cfg: DataConfig) -> DatasetPlan:
    """Resolve settings, build the input audio and compute the dataset hash (no simulation)."""
    settings = resolve_settings(cfg)
    held_out = held_out_indices(cfg, len(settings))
    x, sources = build_input(cfg)
    input_sha = hashlib.sha256(x.tobytes()).hexdigest()
    regions = plan_regions(len(x), cfg.sample_rate, cfg.region_seconds)
    assign_splits(len(regions), cfg.split, cfg.seed, audible_regions(x, regions))  # fail before any simulation
    return DatasetPlan(cfg, settings, held_out, x, sources, input_sha,
                       dataset_hash(cfg, settings, input_sha))


def prepare_dataset(cfg: DataConfig, progress: bool = True) -> Path:
    """Build (or find) the dataset for cfg and return its folder. The only expensive step."""
    started = time.perf_counter()
    plan = plan_dataset(cfg)
    if (plan.path / "manifest.json").is_file():
        return plan.path
    fs = cfg.sample_rate
    regions = plan_regions(len(plan.input), fs, cfg.region_seconds)
    region_splits = assign_splits(len(regions), cfg.split, cfg.seed, audible_regions(plan.input, regions))
    n_chunks = len(spice.plan_chunks(len(plan.input), fs, cfg.chunk_seconds, cfg.warmup_seconds))
    Path(cfg.data_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cfg.data_dir, prefix=f".{plan.key}."))
    try:
        save_wav(tmp / "input.wav", plan.input, fs)
        records, blocked = [], []
        with tqdm(total=n_chunks * len(plan.settings), unit="chunk", disable=not progress,
                  desc="SPICE") as bar:
            for i, pots in enumerate(plan.settings):
                bar.set_postfix_str(f"setting {i + 1}/{len(plan.settings)} {pots.label()}")
                base = bar.n
                volts, sim = simulated_target(cfg, pots, plan.input, plan.input_sha256,
                                              on_chunk=lambda done, _total, b=base: bar.update(b + done - bar.n))
                bar.update(base + n_chunks - bar.n)
                y, dc = dc_block(volts, fs, cfg.dc_block_hz)
                blocked.append(y)
                records.append({
                    "index": i, "label": pots.label(), "pots": to_dict(pots), "held_out": i in plan.held_out,
                    "netlist_hash": netlist_hash(render_netlist(pots)), "file": f"target_{i}.wav",
                    "dc_removed_volts": dc, "peak_volts": float(np.abs(y).max()), "raw_target": sim["key"],
                    "cache_hit": sim["cache_hit"], "simulate_seconds": sim["simulate_seconds"],
                })
        scale = common_scale(blocked)
        for record, y in zip(records, blocked):
            record["target_scale_volts"] = scale
            save_wav(tmp / record["file"], (y / scale).astype(np.float32), fs)
        manifest = {
            "format": DATASET_FORMAT, "code_version": code_version(), "hash": plan.key,
            "ngspice_version": spice.ngspice_version(), "seed": cfg.seed, "sample_rate": fs,
            "input_full_scale_volts": cfg.input_full_scale_volts, "control_names": list(KNOB_NAMES),
            "data_config": {k: v for k, v in to_dict(cfg).items() if k not in ("data_dir", "workers")},
            "input": {"file": "input.wav", "samples": len(plan.input), "seconds": len(plan.input) / fs,
                      "sha256": plan.input_sha256, "sources": plan.sources},
            "target_processing": {"dc_block_hz": cfg.dc_block_hz, "scale": "peak of |DC-blocked volts| over all settings"},
            "settings": records, "held_out": plan.held_out,
            "target_scales": [r["target_scale_volts"] for r in records],  # volts = target * scale
            "regions": [{"start": s, "end": e, "split": name} for (s, e), name in zip(regions, region_splits)],
            "wall_seconds": round(time.perf_counter() - started, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        try:
            os.rename(tmp, plan.path)
        except OSError:  # another process finished the same dataset first: keep theirs
            if not (plan.path / "manifest.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return plan.path


def locate_dataset(cfg: DataConfig) -> Path:
    """Folder of the prepared dataset for cfg (no simulation), or AmpStudyError saying how to make it."""
    path = plan_dataset(cfg).path
    if not (path / "manifest.json").is_file():
        raise AmpStudyError(f"no prepared dataset for this data config at {path}; call "
                            "BassmanDataModule.prepare_data() (or datamodules.dataset.prepare_dataset) first")
    return path


@dataclass(frozen=True)
class LoadedDataset:
    path: Path
    manifest: dict[str, Any]
    input: np.ndarray  # (N,) float32
    targets: list[np.ndarray]  # per setting, (N,) float32
    settings: list[PotSettings]
    held_out: list[int]
    regions: list[tuple[int, int, str]]  # (start, end, split)


def load_dataset(path: str | Path) -> LoadedDataset:
    """Read a prepared dataset folder (input, all targets, manifest)."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise AmpStudyError(f"{path}: not a prepared dataset (no manifest.json); run prepare_data() first")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != DATASET_FORMAT:
        raise AmpStudyError(f"{path}: dataset format {manifest.get('format')} is not {DATASET_FORMAT}; "
                            "delete the folder and prepare it again")
    x, _ = read_float_wav(path / manifest["input"]["file"])
    targets = [read_float_wav(path / s["file"])[0] for s in manifest["settings"]]
    if any(len(t) != len(x) for t in targets):
        raise AmpStudyError(f"{path}: target lengths differ from the input; delete the folder and prepare again")
    settings = [PotSettings(**s["pots"]) for s in manifest["settings"]]
    regions = [(r["start"], r["end"], r["split"]) for r in manifest["regions"]]
    return LoadedDataset(path, manifest, x, targets, settings, list(manifest["held_out"]), regions)
