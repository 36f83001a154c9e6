"""Which knob settings a dataset simulates, with which audio, and what each setting is used for.

Two kinds of settings, freely combined in one DataConfig:

- Listed settings (`settings`, `random_settings`, `grid_points`) share one DI corpus. Their audio
  regions are split into train/val/test audio; `held_out_settings` of them are test-only.
- The knob design (`design_settings` > 0) covers the four-dimensional knob space: a seeded
  scrambled Sobol sequence, each setting with its OWN stretch of synthetic DI (its own corpus
  seed), so the SPICE cost is design_settings x design_seconds however the knobs are spread.
  Volume is drawn over `volume_range` only: the pot is audio taper (datamodules/netlist.py), so
  at the bottom of its travel the amp's output is tens of dB under full volume, where no player
  sets it and where an ESR would measure the noise floor. Each design setting falls in one of
  three disjoint groups: train (audio split into train/val/test regions like listed settings),
  val (never trained on; the study objective) and test (never trained on, never used by any
  trial). The group of setting k depends only on (seed, k), so adding settings never moves an
  existing one to another group.
  With the design, the test group also gets each knob's two end points (the others at 0.5), so
  the extremes of every knob are always checked.
- A knob-response sweep (`response_points` per knob, interior positions, the others at 0.5), all
  on one short clip, used only for the knob-response figure of each run.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np

from datamodules.config import DataConfig, PotSettings
from foundation.errors import ConfigError
from foundation.knobs import KNOB_NAMES

# Independent random-number generators derived from the data seed (numpy SeedSequence spawn keys;
# named RNG_*, not STREAM_*: in this project a stream is audio): changing how many settings of one
# kind are drawn must not move anything drawn by another.
RNG_RANDOM_SETTINGS = 1
RNG_HELD_OUT = 2
RNG_SPLIT = 3
RNG_DESIGN = 4
RNG_GROUPS = 5
RNG_DESIGN_AUDIO = 6
RNG_RESPONSE_AUDIO = 7

GROUPS = ("train", "val", "test", "response")
SHARED_INPUT = "shared"  # the corpus (+ user wavs) that listed settings share
RESPONSE_INPUT = "response"  # the clip of the knob-response sweep
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0  # frac(k * GOLDEN) spreads group draws evenly for any count
DECIMALS = 3  # knob positions are rounded so labels and manifests stay readable


@dataclass(frozen=True)
class PlannedSetting:
    pots: PotSettings
    group: str  # train | val | test | response
    input: str  # SHARED_INPUT, RESPONSE_INPUT or "own-<n>" (this setting's own DI stretch)
    audio_seed: int  # corpus seed of an own input (0 otherwise)
    kind: str  # listed | design | sweep | response


def seeded_rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def derived_seed(seed: int, stream: int, index: int) -> int:
    """A corpus seed for item `index` of a stream: stable whatever else the config contains."""
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0])


def listed_settings(cfg: DataConfig) -> list[PotSettings]:
    """cfg.knobs.settings, then `random_settings` seeded random ones, then the `grid_points` grid."""
    found: list[PotSettings] = list(cfg.knobs.settings)
    rng = seeded_rng(cfg.seed, RNG_RANDOM_SETTINGS)
    for _ in range(cfg.knobs.random_settings):
        found.append(PotSettings(*np.round(rng.uniform(0.0, 1.0, len(KNOB_NAMES)), DECIMALS).tolist()))
    if cfg.knobs.grid_points >= 2:
        axis = np.linspace(0.0, 1.0, cfg.knobs.grid_points).round(6).tolist()
        found += [PotSettings(*combo) for combo in itertools.product(axis, repeat=len(KNOB_NAMES))]
    return found


def held_out_indices(cfg: DataConfig, n_listed: int) -> list[int]:
    """Sorted indices of the listed settings used only for testing (a seeded choice)."""
    if cfg.knobs.held_out_settings == 0:
        return []
    if cfg.knobs.held_out_settings >= n_listed:
        raise ConfigError(
            f"knobs.held_out_settings: {cfg.knobs.held_out_settings} would hold out all {n_listed} listed knob settings, "
            "leaving none to train on; lower it or add settings (knobs.random_settings, knobs.grid_points)")
    rng = seeded_rng(cfg.seed, RNG_HELD_OUT)
    return sorted(int(i) for i in rng.permutation(n_listed)[: cfg.knobs.held_out_settings])


def volume_position(cfg: DataConfig, unit: float) -> float:
    low, high = cfg.knobs.volume_range
    return low + unit * (high - low)


def design_points(cfg: DataConfig) -> list[PotSettings]:
    """The first `design_settings` points of a seeded scrambled Sobol sequence (prefix-stable)."""
    if cfg.knobs.design_settings == 0:
        return []
    from scipy.stats import qmc

    sobol = qmc.Sobol(d=len(KNOB_NAMES), scramble=True, seed=seeded_rng(cfg.seed, RNG_DESIGN))
    with warnings.catch_warnings():  # balance properties want 2^m points; any prefix is still space-filling
        warnings.simplefilter("ignore", UserWarning)
        unit = sobol.random(cfg.knobs.design_settings)
    unit[:, 0] = [volume_position(cfg, u) for u in unit[:, 0]]
    return [PotSettings(*np.round(row, DECIMALS).tolist()) for row in unit]


def design_group(cfg: DataConfig, index: int) -> str:
    """train / val / test for design setting `index`: a function of (seed, index) only."""
    offset = float(seeded_rng(cfg.seed, RNG_GROUPS).random())
    u = (offset + index * GOLDEN) % 1.0
    train, val, _ = cfg.knobs.design_split
    return "train" if u < train else "val" if u < train + val else "test"


def sweep_end_points(cfg: DataConfig) -> list[PotSettings]:
    """Each knob at both ends of its range with the others at 0.5: the extremes a test must cover."""
    points = []
    for knob in KNOB_NAMES:
        for end in (0.0, 1.0):
            value = volume_position(cfg, end) if knob == "volume" else end
            points.append(PotSettings(**{knob: round(value, DECIMALS)}))
    return points


def response_positions(cfg: DataConfig) -> list[float]:
    """Interior positions 0..1 of the knob-response sweep (the end points are test settings)."""
    n = cfg.knobs.response_points
    return [round((i + 1) / (n + 1), DECIMALS) for i in range(n)]


def response_settings(cfg: DataConfig) -> list[PotSettings]:
    points = []
    for knob in KNOB_NAMES:
        for position in response_positions(cfg):
            value = volume_position(cfg, position) if knob == "volume" else position
            points.append(PotSettings(**{knob: round(value, DECIMALS)}))
    return points


def plan_settings(cfg: DataConfig) -> list[PlannedSetting]:
    """Every setting of the dataset in a fixed order: listed, design, sweep end points, response.

    A knob setting that appears twice is simulated once: the first occurrence keeps its group (so a
    test setting that equals a training setting is trained on, never reported as unseen).
    """
    listed = listed_settings(cfg)
    held_out = set(held_out_indices(cfg, len(listed)))
    planned = [PlannedSetting(p, "test" if i in held_out else "train", SHARED_INPUT, 0, "listed")
               for i, p in enumerate(listed)]
    for i, pots in enumerate(design_points(cfg)):
        planned.append(PlannedSetting(pots, design_group(cfg, i), f"own-design-{i}",
                                      derived_seed(cfg.seed, RNG_DESIGN_AUDIO, i), "design"))
    if cfg.knobs.design_settings and cfg.knobs.sweep_test_settings:
        for i, pots in enumerate(sweep_end_points(cfg)):
            # Their own audio stream, offset past any design size, so adding design settings changes nothing here.
            planned.append(PlannedSetting(pots, "test", f"own-sweep-{i}",
                                          derived_seed(cfg.seed, RNG_DESIGN_AUDIO, 1_000_000 + i), "sweep"))
    unique = _first_of_each(planned)
    # The response sweep has its own clip, so it may repeat a knob setting of another group.
    unique += _first_of_each([PlannedSetting(pots, "response", RESPONSE_INPUT,
                                             derived_seed(cfg.seed, RNG_RESPONSE_AUDIO, 0), "response")
                              for pots in response_settings(cfg)])
    if not any(s.group == "train" for s in unique):
        raise ConfigError("knobs.settings: no knob setting is left for training; add settings or design_settings, "
                          "or lower held_out_settings / design_split's val and test shares")
    if cfg.knobs.design_settings and not any(s.group == "val" and s.kind == "design" for s in unique):
        raise ConfigError(f"knobs.design_settings: {cfg.knobs.design_settings} design settings put none in the validation "
                          "group (knobs.design_split); use more design settings or a larger validation share")
    return unique


def _first_of_each(planned: list[PlannedSetting]) -> list[PlannedSetting]:
    unique: list[PlannedSetting] = []
    seen: set[PotSettings] = set()
    for setting in planned:
        if setting.pots not in seen:
            seen.add(setting.pots)
            unique.append(setting)
    return unique
