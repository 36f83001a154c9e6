"""Which knob settings a dataset simulates, and which of them are held out for testing only."""

from __future__ import annotations

import itertools

import numpy as np

from datamodules.config import DataConfig, PotSettings
from foundation.errors import ConfigError
from foundation.knobs import KNOB_NAMES

# Independent random streams of the data seed (numpy SeedSequence spawn keys): changing how
# many random settings are drawn must not move the held-out choice or the split.
STREAM_RANDOM_SETTINGS = 1
STREAM_HELD_OUT = 2
STREAM_SPLIT = 3


def seeded_rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def resolve_settings(cfg: DataConfig) -> list[PotSettings]:
    """cfg.settings, then `random_settings` seeded random ones, then the `grid_points` grid.

    Duplicates are dropped (first occurrence kept) so no setting is simulated twice. Random
    positions are rounded to 3 decimals to keep labels and manifests readable.
    """
    found: list[PotSettings] = list(cfg.settings)
    rng = seeded_rng(cfg.seed, STREAM_RANDOM_SETTINGS)
    for _ in range(cfg.random_settings):
        found.append(PotSettings(*np.round(rng.uniform(0.0, 1.0, len(KNOB_NAMES)), 3).tolist()))
    if cfg.grid_points >= 2:
        axis = np.linspace(0.0, 1.0, cfg.grid_points).round(6).tolist()
        found += [PotSettings(*combo) for combo in itertools.product(axis, repeat=len(KNOB_NAMES))]
    unique: list[PotSettings] = []
    for pots in found:
        if pots not in unique:
            unique.append(pots)
    return unique


def held_out_indices(cfg: DataConfig, n_settings: int) -> list[int]:
    """Sorted indices of the settings used only for testing (a seeded choice)."""
    if cfg.held_out_settings == 0:
        return []
    if cfg.held_out_settings >= n_settings:
        raise ConfigError(
            f"held_out_settings: {cfg.held_out_settings} would hold out all {n_settings} knob settings, "
            "leaving none to train on; lower it or add settings (random_settings, grid_points)")
    rng = seeded_rng(cfg.seed, STREAM_HELD_OUT)
    return sorted(int(i) for i in rng.permutation(n_settings)[: cfg.held_out_settings])
