"""Dataset configuration: what audio goes into the SPICE Bassman and at which knob settings."""

from __future__ import annotations

import math
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
    seed: int = 0  # corpus, random knob settings, the knob design and split assignment
    # Listed knob settings: they share one corpus of corpus_seconds (+ wav_files).
    settings: tuple[PotSettings, ...] = (PotSettings(),)
    random_settings: int = 0  # extra seeded random knob settings
    grid_points: int = 0  # >1 adds a full grid with this many positions per knob
    held_out_settings: int = 0  # listed knob settings used only for testing (never in train/val)
    # The knob design (datamodules/knob_design.py): space-filling settings, each with its own DI.
    design_settings: int = 0  # scrambled-Sobol knob settings; 0 = no design
    design_seconds: float = 6.0  # synthetic DI per design setting
    volume_range: tuple[float, float] = (0.1, 1.0)  # volume positions the design covers (audio taper)
    setting_split: tuple[float, float, float] = (0.7, 0.15, 0.15)  # design settings: train/val/test groups
    sweep_test_settings: bool = True  # with a design: test every knob's two end points (others at 0.5)
    response_points: int = 0  # knob-response figure: positions per knob (others at 0.5); 0 = none
    response_seconds: float = 2.0  # length of the clip the response sweep plays
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train/val/test share of training settings' audio regions
    region_seconds: float = 2.0  # audio is split in regions of this length, assigned to splits by seed
    dc_block_hz: float = 5.0  # first-order high-pass on the target, like the next stage's coupling cap
    # ngspice runs at oversampling x sample_rate, between the band-limited interpolation and the
    # anti-alias decimation of datamodules/resampling.py; 1 = the point-sampled chain of datasets built
    # before oversampling existed. The default is chosen in benchmarks/results/spice_aliasing.md.
    oversampling: int = 16
    max_step_fraction: float = 0.25  # ngspice max time step as a fraction of one sample at sample_rate
    chunk_seconds: float = 2.0  # audio per ngspice process
    # Overlap simulated before each chunk and thrown away: it lets the slow capacitors settle, so
    # chunk joins sit at ngspice's noise floor (datamodules/spice.py says why; benchmarks/
    # spice_speed.py --sections warmup measures it); 0.5 s until issue 14.
    warmup_seconds: float = 0.2
    workers: int = 0  # parallel ngspice processes; 0 = one per CPU core

    def __post_init__(self) -> None:
        for name in ("corpus_seconds", "input_full_scale_volts", "design_seconds", "response_seconds",
                     "region_seconds", "dc_block_hz", "max_step_fraction", "chunk_seconds", "warmup_seconds"):
            require(math.isfinite(getattr(self, name)), name, f"{getattr(self, name)} is not a finite number")
        require(8000 <= self.sample_rate <= 384000, "sample_rate", f"{self.sample_rate} Hz is not an audio rate")
        require(self.corpus_seconds >= 0, "corpus_seconds", "must be >= 0")
        require(self.input_full_scale_volts > 0, "input_full_scale_volts", "must be > 0")
        listed = len(self.settings) + self.random_settings + self.grid_points ** 4
        require(listed + self.design_settings > 0, "settings",
                "no knob settings: give settings, random_settings, grid_points or design_settings")
        require(listed == 0 or self.corpus_seconds > 0 or bool(self.wav_files), "corpus_seconds",
                "is 0 and no wav_files are given: the listed settings would have no audio")
        require(self.random_settings >= 0, "random_settings", "must be >= 0")
        require(self.grid_points == 0 or self.grid_points >= 2, "grid_points", "must be 0 (off) or >= 2")
        require(self.held_out_settings >= 0, "held_out_settings", "must be >= 0")
        require(0 <= self.design_settings <= 4096, "design_settings", "must be in 0..4096")
        require(self.design_seconds > 0, "design_seconds", "must be > 0")
        low, high = self.volume_range
        require(0 <= low < high <= 1, "volume_range", f"{self.volume_range} must be two positions 0 <= low < high <= 1")
        _require_shares(self.setting_split, "setting_split", "train and validation groups")
        require(0 <= self.response_points <= 64, "response_points", "must be in 0..64")
        require(self.response_seconds > 0, "response_seconds", "must be > 0")
        _require_shares(self.split, "split", "train and validation shares")
        require(self.region_seconds > 0, "region_seconds", "must be > 0")
        require(self.dc_block_hz >= 0, "dc_block_hz", "must be >= 0")
        require(1 <= self.oversampling <= 16, "oversampling", f"{self.oversampling} must be a whole number in 1..16 "
                "(1 = no oversampling)")
        require(0 < self.max_step_fraction <= 1, "max_step_fraction", "must be in (0, 1]")
        require(self.chunk_seconds > 0, "chunk_seconds", "must be > 0")
        require(self.warmup_seconds >= 0, "warmup_seconds", "must be >= 0")
        require(self.workers >= 0, "workers", "must be >= 0 (0 = all cores)")


def _require_shares(shares: tuple[float, float, float], name: str, positive: str) -> None:
    require(all(math.isfinite(s) and s >= 0 for s in shares) and abs(sum(shares) - 1) < 1e-6, name,
            f"{shares} must be three non-negative shares summing to 1")
    require(shares[0] > 0 and shares[1] > 0, name, f"the {positive} must be > 0")


