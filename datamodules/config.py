"""Dataset configuration: what audio goes into the SPICE Bassman and at which knob settings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from foundation.configs import require
from foundation.knobs import KNOB_NAMES, check_knob


@dataclass(frozen=True)
class PotSettings:
    """Knob positions as the user sees them: 0 = fully counter-clockwise, 1 = fully clockwise.

    The mapping to resistances (audio taper for volume, etc.) lives with the netlist.
    """

    volume: float = 0.5
    treble: float = 0.5
    bass: float = 0.5
    middle: float = 0.5

    def __post_init__(self) -> None:
        for name in KNOB_NAMES:
            check_knob(name, getattr(self, name))

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.volume, self.treble, self.bass, self.middle)

    def label(self) -> str:
        return "_".join(f"{n[0]}{getattr(self, n):.2f}" for n in KNOB_NAMES)


@dataclass(frozen=True)
class KnobsConfig:
    """Which knob settings the amp is simulated at, and which of them test generalisation.

    Two ways, combinable: listed settings (`settings`, `random_settings`, a grid) share one corpus
    of DI audio and split it by regions (`audio.region_split`); the knob design gives each of its
    settings its own DI and splits the settings themselves (`design_split`), so its test settings
    are never heard in training.
    """

    # Listed settings: they share one corpus of audio.corpus_seconds (+ audio.wav_files).
    settings: tuple[PotSettings, ...] = (PotSettings(),)
    random_settings: int = 0  # extra seeded random settings; each adds one SPICE run of the corpus
    grid_points: int = 0  # >1 adds a full grid of grid_points^4 settings; the cost grows with the 4th power
    held_out_settings: int = 0  # listed settings used only for testing: fewer to train on, a check of unseen ones
    # The knob design (datamodules/knob_design.py): space-filling settings, each with its own DI.
    design_settings: int = 0  # scrambled-Sobol settings; 0 = no design; more covers the knob space better, costs SPICE time
    design_seconds: float = 6.0  # seconds of synthetic DI per design setting: more audio per setting vs more settings
    volume_range: tuple[float, float] = (0.1, 1.0)  # volume positions (0..1, audio taper) the design covers
    design_split: tuple[float, float, float] = (0.7, 0.15, 0.15)  # shares of design settings in train/val/test
    sweep_test_settings: bool = True  # with a design: also test every knob's two end points (others at 0.5)
    response_points: int = 0  # knob-response figure: positions per knob (others at 0.5); 0 = no figure
    response_seconds: float = 2.0  # seconds of the clip the response sweep plays at each position

    def __post_init__(self) -> None:
        require(math.isfinite(self.design_seconds), "design_seconds", f"{self.design_seconds} is not a finite number")
        require(math.isfinite(self.response_seconds), "response_seconds",
                f"{self.response_seconds} is not a finite number")
        require(self.listed() + self.design_settings > 0, "settings",
                "no knob settings: give settings, random_settings, grid_points or design_settings")
        require(self.random_settings >= 0, "random_settings", "must be >= 0")
        require(self.grid_points == 0 or self.grid_points >= 2, "grid_points", "must be 0 (off) or >= 2")
        require(self.held_out_settings >= 0, "held_out_settings", "must be >= 0")
        require(0 <= self.design_settings <= 4096, "design_settings", "must be in 0..4096")
        require(self.design_seconds > 0, "design_seconds", "must be > 0")
        low, high = self.volume_range
        require(0 <= low < high <= 1, "volume_range", f"{self.volume_range} must be two positions 0 <= low < high <= 1")
        _require_shares(self.design_split, "design_split", "train and validation groups")
        require(0 <= self.response_points <= 64, "response_points", "must be in 0..64")
        require(self.response_seconds > 0, "response_seconds", "must be > 0")

    def listed(self) -> int:
        """How many listed settings (before holding any out)."""
        return len(self.settings) + self.random_settings + self.grid_points ** 4


@dataclass(frozen=True)
class AudioConfig:
    """The DI audio of the listed settings, how it is split, and how the target is conditioned."""

    corpus_seconds: float = 60.0  # seconds of synthetic guitar/bass DI the listed settings share; each setting simulates all of it
    wav_files: tuple[str, ...] = ()  # extra user DI recordings (mono, at data.sample_rate, full scale = input_full_scale_volts)
    input_full_scale_volts: float = 1.0  # volts at the amp's input of a full-scale (+-1.0) sample: how hard the DI drives the amp
    region_split: tuple[float, float, float] = (0.8, 0.1, 0.1)  # shares of the listed settings' audio regions in train/val/test
    region_seconds: float = 2.0  # seconds per region: shorter mixes splits more finely, but must hold a training segment
    dc_block_hz: float = 5.0  # Hz of the first-order high-pass on the target, like the next stage's coupling capacitor

    def __post_init__(self) -> None:
        for name in ("corpus_seconds", "input_full_scale_volts", "region_seconds", "dc_block_hz"):
            require(math.isfinite(getattr(self, name)), name, f"{getattr(self, name)} is not a finite number")
        require(self.corpus_seconds >= 0, "corpus_seconds", "must be >= 0")
        require(self.input_full_scale_volts > 0, "input_full_scale_volts", "must be > 0")
        _require_shares(self.region_split, "region_split", "train and validation shares")
        require(self.region_seconds > 0, "region_seconds", "must be > 0")
        require(self.dc_block_hz >= 0, "dc_block_hz", "must be >= 0")


@dataclass(frozen=True)
class SimulationConfig:
    """How ngspice simulates: accuracy (oversampling, step) against SPICE time; chunking for cores."""

    # ngspice runs at oversampling x sample_rate, between the band-limited interpolation and the
    # anti-alias decimation of datamodules/resampling.py; 1 = the point-sampled chain of datasets built
    # before oversampling existed. The default is chosen in benchmarks/results/spice_aliasing.md; SPICE
    # time grows with it.
    oversampling: int = 16
    max_step_fraction: float = 0.25  # ngspice's largest time step, as a fraction of one sample at sample_rate: smaller is slower, more exact
    chunk_seconds: float = 2.0  # seconds of audio per ngspice process: shorter spreads over more cores, adds warm-ups
    # Seconds simulated before each chunk and thrown away: they let the slow capacitors settle, so
    # chunk joins sit at ngspice's noise floor (datamodules/spice.py says why; benchmarks/
    # spice_speed.py --sections warmup measures it); each costs SPICE time per chunk.
    warmup_seconds: float = 0.2

    def __post_init__(self) -> None:
        for name in ("max_step_fraction", "chunk_seconds", "warmup_seconds"):
            require(math.isfinite(getattr(self, name)), name, f"{getattr(self, name)} is not a finite number")
        require(1 <= self.oversampling <= 16, "oversampling", f"{self.oversampling} must be a whole number in 1..16 "
                "(1 = no oversampling)")
        require(0 < self.max_step_fraction <= 1, "max_step_fraction", "must be in (0, 1]")
        require(self.chunk_seconds > 0, "chunk_seconds", "must be > 0")
        require(self.warmup_seconds >= 0, "warmup_seconds", "must be >= 0")


@dataclass(frozen=True)
class DataConfig:
    """Settings for BassmanDataModule, in three groups ([data.knobs], [data.audio], [data.simulation]);
    every field but data_dir and workers is part of the dataset's content hash."""

    data_dir: str = "data"  # cache root; datasets live in data_dir/<content-hash>/
    sample_rate: int = 44100  # Hz of the dataset (ngspice runs at simulation.oversampling times it)
    seed: int = 0  # the corpus, random knob settings, the knob design and split assignment
    workers: int = 0  # parallel ngspice processes; 0 = one per CPU core
    knobs: KnobsConfig = field(default_factory=KnobsConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)

    # Keys of the flat [data] table before the groups (2026-12), and where each went.
    MOVED_KEYS: ClassVar[dict[str, str]] = {
        **{k: f"knobs.{k}" for k in ("settings", "random_settings", "grid_points", "held_out_settings",
                                      "design_settings", "design_seconds", "volume_range", "sweep_test_settings",
                                      "response_points", "response_seconds")},
        "setting_split": "knobs.design_split", "split": "audio.region_split",
        **{k: f"audio.{k}" for k in ("corpus_seconds", "wav_files", "input_full_scale_volts", "region_seconds",
                                      "dc_block_hz")},
        **{k: f"simulation.{k}" for k in ("oversampling", "max_step_fraction", "chunk_seconds", "warmup_seconds")},
    }

    def __post_init__(self) -> None:
        require(8000 <= self.sample_rate <= 384000, "sample_rate", f"{self.sample_rate} Hz is not an audio rate")
        require(self.workers >= 0, "workers", "must be >= 0 (0 = all cores)")
        require(self.knobs.listed() == 0 or self.audio.corpus_seconds > 0 or bool(self.audio.wav_files),
                "audio.corpus_seconds", "is 0 and no audio.wav_files are given: the listed settings would have no audio")


def _require_shares(shares: tuple[float, float, float], name: str, positive: str) -> None:
    require(all(math.isfinite(s) and s >= 0 for s in shares) and abs(sum(shares) - 1) < 1e-6, name,
            f"{shares} must be three non-negative shares summing to 1")
    require(shares[0] > 0 and shares[1] > 0, name, f"the {positive} must be > 0")


