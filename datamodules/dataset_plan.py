"""Everything about a dataset that is known before any simulation: settings, input audio, regions, hash.

`plan_dataset` is cheap (no audio is generated): it is what finds an existing dataset.
`build_audio` synthesises the inputs and splits their regions: only preparing a dataset needs it.

Audio regions: every input used by a training-group setting is cut into regions of
`region_seconds`; the regions of all such inputs are pooled and a seeded permutation assigns
`split` shares of them to validation and test audio (only regions whose input carries signal: a
near-silent region would make an ESR meaningless). A setting of the val, test or response group
uses all of its input as that group's audio.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import foundation
from datamodules import corpus
from datamodules.audio_io import load_wav
from datamodules.config import DataConfig
from datamodules.corpus import synth_corpus
from datamodules.knob_design import (
    RESPONSE_INPUT,
    SHARED_INPUT,
    RNG_SPLIT,
    PlannedSetting,
    plan_settings,
    seeded_rng,
)
from datamodules.netlist import netlist_hash, render_netlist
from foundation.configs import to_dict
from foundation.errors import ConfigError

DATASET_FORMAT = 5  # bump when the files or their processing change meaning
# 4: point-sampled SPICE at fs, no file checksums; 5: oversampled and anti-aliased, files checksummed
READABLE_FORMATS = (4, 5)
WAV_GAP_SECONDS = 0.1  # silence before each user wav: the amp settles between recordings
NOT_CONTENT_FIELDS = ("data_dir", "workers", "audio.wav_files")  # wav bytes are hashed instead of their paths
AUDIBLE_DBFS = -45.0  # regions quieter than this (input RMS) are used for training only


@dataclass(frozen=True)
class Region:
    input: str  # key of the input audio
    start: int
    end: int
    split: str  # train | val | test


@dataclass(frozen=True)
class DatasetPlan:
    """What a config asks for, cheap to know: the settings and the dataset's content hash."""

    cfg: DataConfig
    settings: tuple[PlannedSetting, ...]
    key: str

    @property
    def path(self) -> Path:
        return Path(self.cfg.data_dir) / self.key


@dataclass(frozen=True)
class DatasetAudio:
    """The input audio of a planned dataset and its split regions (built only to prepare it)."""

    inputs: dict[str, np.ndarray] = field(repr=False)  # key -> float32 audio, full scale = input_full_scale_volts
    sources: dict[str, list[dict[str, Any]]]  # key -> where the audio came from
    input_sha256: dict[str, str]
    regions: tuple[Region, ...]  # of the inputs of training-group settings


def code_version() -> str:
    return f"{foundation.__version__}+ds{DATASET_FORMAT}"


def sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def shared_input(cfg: DataConfig) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The corpus the listed settings share: synthetic DI, then the user's wavs after short gaps."""
    fs = cfg.sample_rate
    parts: list[np.ndarray] = []
    sources: list[dict[str, Any]] = []
    start = 0
    if cfg.audio.corpus_seconds > 0:
        corpus = synth_corpus(cfg.audio.corpus_seconds, fs, cfg.seed)
        parts.append(corpus)
        sources.append({"kind": "synth", "start": 0, "samples": len(corpus), "seed": cfg.seed})
        start = len(corpus)
    for path in cfg.audio.wav_files:
        wav = load_wav(path, fs)
        gap = np.zeros(int(WAV_GAP_SECONDS * fs), dtype=np.float32)
        parts += [gap, wav]
        start += len(gap)
        sources.append({"kind": "wav", "path": str(path), "start": start, "samples": len(wav),
                        "sha256": hashlib.sha256(wav.tobytes()).hexdigest()})
        start += len(wav)
    return np.concatenate(parts).astype(np.float32), sources


def build_inputs(cfg: DataConfig, settings: tuple[PlannedSetting, ...]) -> tuple[dict, dict]:
    """(key -> audio, key -> sources) for every input some setting plays."""
    inputs: dict[str, np.ndarray] = {}
    sources: dict[str, list[dict[str, Any]]] = {}
    for setting in settings:
        key = setting.input
        if key in inputs:
            continue
        if key == SHARED_INPUT:
            inputs[key], sources[key] = shared_input(cfg)
            continue
        seconds = cfg.knobs.response_seconds if key == RESPONSE_INPUT else cfg.knobs.design_seconds
        inputs[key] = synth_corpus(seconds, cfg.sample_rate, setting.audio_seed)
        sources[key] = [{"kind": "synth", "start": 0, "samples": len(inputs[key]), "seed": setting.audio_seed}]
    return inputs, sources


def plan_regions(n_samples: int, fs: int, region_seconds: float) -> list[tuple[int, int]]:
    """[start, end) of consecutive regions of region_seconds; the last one takes the remainder."""
    size = max(1, int(round(region_seconds * fs)))
    count = n_samples // size
    bounds = [(i * size, (i + 1) * size) for i in range(count)]
    if bounds:
        bounds[-1] = (bounds[-1][0], n_samples)
    return bounds


def audible_regions(x: np.ndarray, regions: list[tuple[int, int]], min_rms_dbfs: float = AUDIBLE_DBFS) -> list[bool]:
    """Whether each region's input carries signal (RMS above min_rms_dbfs)."""
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
        raise ConfigError(f"audio.region_seconds: the audio holds only {n_regions} region(s), need at least "
                          f"{max(needed, n_regions + 1 - n_train)} for region_split {split}; lower region_seconds "
                          "or add audio (audio.corpus_seconds, knobs.design_seconds, audio.wav_files)")
    if sum(audible) < n_val + n_test:
        raise ConfigError(f"audio.region_seconds: only {sum(audible)} of {n_regions} regions carry signal, need "
                          f"{n_val + n_test} for validation and test; add audio or change region_seconds")
    order = seeded_rng(seed, RNG_SPLIT).permutation(n_regions)
    assigned = ["train"] * n_regions
    wanted = ["test"] * n_test + ["val"] * n_val
    for region in order[::-1]:
        if not wanted:
            break
        if audible[int(region)]:
            assigned[int(region)] = wanted.pop(0)
    return assigned


def split_regions(cfg: DataConfig, settings: tuple[PlannedSetting, ...],
                  inputs: dict[str, np.ndarray]) -> tuple[Region, ...]:
    """Regions of every input a training-group setting plays, pooled, with their split."""
    keys = list(dict.fromkeys(s.input for s in settings if s.group == "train"))
    spans = [(key, start, end) for key in keys
             for start, end in plan_regions(len(inputs[key]), cfg.sample_rate, cfg.audio.region_seconds)]
    audible = [audible_regions(inputs[key], [(start, end)])[0] for key, start, end in spans]
    names = assign_splits(len(spans), cfg.audio.region_split, cfg.seed, audible)
    return tuple(Region(key, start, end, name) for (key, start, end), name in zip(spans, names))


def generator_version() -> str:
    """Hash of the corpus generator's source: the synthetic input changes only when this does."""
    return hashlib.sha256(Path(corpus.__file__).read_bytes()).hexdigest()


def dataset_hash(cfg: DataConfig, settings: tuple[PlannedSetting, ...]) -> str:
    """Content hash of the dataset from what determines it: config, netlists, code, user audio bytes.

    Hashing the generator's source instead of the generated audio keeps the hash cheap (no corpus
    is synthesised to find an existing dataset) and still changes whenever the audio could.
    """
    content = to_dict(cfg)
    for name in NOT_CONTENT_FIELDS:  # dotted names reach into the groups
        *groups, leaf = name.split(".")
        table = content
        for group in groups:
            table = table[group]
        del table[leaf]
    netlists = [netlist_hash(render_netlist(s.pots)) for s in settings]
    wavs = [hashlib.sha256(Path(p).read_bytes()).hexdigest() if Path(p).is_file() else str(p) for p in cfg.audio.wav_files]
    return sha256_json({"code": code_version(), "generator": generator_version(), "config": content,
                        "netlists": netlists, "wav_files": wavs})[:24]


@functools.lru_cache(maxsize=8)
def plan_dataset(cfg: DataConfig) -> DatasetPlan:
    """The settings and content hash of the dataset `cfg` describes (no audio is built)."""
    settings = tuple(plan_settings(cfg))
    return DatasetPlan(cfg, settings, dataset_hash(cfg, settings))


def build_audio(plan: DatasetPlan) -> DatasetAudio:
    """Input audio and split regions of a plan; fails on a config that cannot make a usable dataset."""
    inputs, sources = build_inputs(plan.cfg, plan.settings)
    input_sha = {key: hashlib.sha256(x.tobytes()).hexdigest() for key, x in inputs.items()}
    return DatasetAudio(inputs, sources, input_sha, split_regions(plan.cfg, plan.settings, inputs))
