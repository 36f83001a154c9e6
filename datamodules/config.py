"""Dataset configuration: what audio goes into the SPICE Bassman and at which knob settings."""

from __future__ import annotations

from dataclasses import dataclass

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
class DataConfig:
    """Settings for BassmanDataModule; every field is part of the cache key."""

    data_dir: str = "data"  # cache root; datasets live in data_dir/<content-hash>/
    sample_rate: int = 44100
    corpus_seconds: float = 60.0  # synthetic guitar/bass DI per knob setting
    wav_files: tuple[str, ...] = ()  # extra user DI recordings (mono, sample_rate, full scale = input_full_scale_volts)
    input_full_scale_volts: float = 1.0  # a full-scale (+-1.0) input sample is this many volts at the amp's input
    seed: int = 0  # corpus, random knob settings and split assignment
    settings: tuple[PotSettings, ...] = (PotSettings(),)
    random_settings: int = 0  # extra seeded random knob settings
    grid_points: int = 0  # >1 adds a full grid with this many positions per knob
    held_out_settings: int = 0  # knob settings used only for testing (never in train/val)
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train/val/test share of audio regions
    region_seconds: float = 2.0  # audio is split in regions of this length, assigned to splits by seed
    dc_block_hz: float = 5.0  # first-order high-pass on the target, like the next stage's coupling cap
    max_step_fraction: float = 0.25  # ngspice max time step as a fraction of one sample
    chunk_seconds: float = 2.0  # audio per ngspice process
    warmup_seconds: float = 0.5  # overlap simulated before each chunk and thrown away
    workers: int = 0  # parallel ngspice processes; 0 = one per CPU core

    def __post_init__(self) -> None:
        require(8000 <= self.sample_rate <= 384000, "sample_rate", f"{self.sample_rate} Hz is not an audio rate")
        require(self.corpus_seconds >= 0, "corpus_seconds", "must be >= 0")
        require(self.corpus_seconds > 0 or bool(self.wav_files), "corpus_seconds",
                "is 0 and no wav_files are given: there would be no audio")
        require(self.input_full_scale_volts > 0, "input_full_scale_volts", "must be > 0")
        require(len(self.settings) + self.random_settings + max(self.grid_points, 0) > 0, "settings",
                "no knob settings: give settings, random_settings or grid_points")
        require(self.random_settings >= 0, "random_settings", "must be >= 0")
        require(self.grid_points == 0 or self.grid_points >= 2, "grid_points", "must be 0 (off) or >= 2")
        require(self.held_out_settings >= 0, "held_out_settings", "must be >= 0")
        require(all(s >= 0 for s in self.split) and abs(sum(self.split) - 1) < 1e-6, "split",
                f"{self.split} must be three non-negative shares summing to 1")
        require(self.split[0] > 0 and self.split[1] > 0, "split", "train and validation shares must be > 0")
        require(self.region_seconds > 0, "region_seconds", "must be > 0")
        require(self.dc_block_hz >= 0, "dc_block_hz", "must be >= 0")
        require(0 < self.max_step_fraction <= 1, "max_step_fraction", "must be in (0, 1]")
        require(self.chunk_seconds > 0, "chunk_seconds", "must be > 0")
        require(self.warmup_seconds >= 0, "warmup_seconds", "must be >= 0")
        require(self.workers >= 0, "workers", "must be >= 0 (0 = all cores)")


