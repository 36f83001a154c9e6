"""The knob design: seeded, space-filling, three disjoint groups stable as the design grows (no SPICE)."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules.config import DataConfig, KnobsConfig, PotSettings
from datamodules.knob_design import design_group, design_points, plan_settings, response_settings, sweep_end_points
from foundation.errors import ConfigError
from foundation.knobs import KNOB_NAMES


def design(n: int, seed: int = 0, **knobs) -> DataConfig:
    return DataConfig(seed=seed, knobs=KnobsConfig(**{"settings": (), "design_settings": n, **knobs}))


def test_design_is_seeded_distinct_and_covers_every_knob_range():
    cfg = design(64)
    points = design_points(cfg)
    assert points == design_points(design(64)) and points != design_points(design(64, seed=1))
    assert len(set(points)) == 64
    values = np.array([p.as_tuple() for p in points])
    low, high = cfg.knobs.volume_range
    assert values[:, 0].min() >= low and values[:, 0].max() <= high
    for k, name in enumerate(KNOB_NAMES):
        lo, hi = (low, high) if name == "volume" else (0.0, 1.0)
        # space-filling: every eighth of each knob's range holds about an eighth of the points
        counts = np.histogram(values[:, k], bins=8, range=(lo, hi))[0]
        assert counts.min() >= 6 and counts.max() <= 10, (name, counts)


def test_space_filling_beats_random_in_the_joint_space():
    """The largest empty gap (distance to the nearest design point from anywhere) is smaller than random's."""
    rng = np.random.default_rng(1)
    probes = rng.uniform(size=(4000, 4))
    sobol = np.array([p.as_tuple() for p in design_points(design(64, volume_range=(0.0, 1.0)))])
    random = rng.uniform(size=(64, 4))

    def coverage_radius(points):
        return np.sqrt(((probes[:, None, :] - points[None]) ** 2).sum(-1)).min(1).max()

    assert coverage_radius(sobol) < coverage_radius(random)


def test_groups_are_disjoint_balanced_and_stable_when_the_design_grows():
    small, large = plan_settings(design(32)), plan_settings(design(96))
    groups_small = {s.pots: s.group for s in small if s.kind == "design"}
    groups_large = {s.pots: s.group for s in large if s.kind == "design"}
    assert groups_small.items() <= groups_large.items()  # same settings keep their group
    assert [design_group(design(32), i) for i in range(32)] == [design_group(design(96), i) for i in range(32)]
    counts = {g: list(groups_large.values()).count(g) for g in ("train", "val", "test")}
    assert counts["train"] == pytest.approx(0.7 * 96, abs=3) and counts["val"] == pytest.approx(0.15 * 96, abs=3)
    pots = [s.pots for s in large if s.group != "response"]
    assert len(pots) == len(set(pots))  # a knob setting belongs to one group only
    assert {s.input for s in large if s.kind == "design"} == {f"own-design-{i}" for i in range(96)}
    assert len({s.audio_seed for s in large if s.kind == "design"}) == 96  # each its own DI


def test_test_group_always_holds_every_knob_at_both_ends():
    cfg = design(16)
    tests = {s.pots for s in plan_settings(cfg) if s.group == "test"}
    ends = sweep_end_points(cfg)
    assert len(ends) == 8 and set(ends) <= tests
    assert PotSettings(volume=cfg.knobs.volume_range[0]) in ends and PotSettings(treble=0.0) in ends
    assert PotSettings(middle=1.0) in ends


def test_response_sweep_is_interior_on_one_clip_and_never_a_test_setting():
    cfg = design(16, response_points=3)
    planned = plan_settings(cfg)
    response = [s for s in planned if s.group == "response"]
    # the centre (all at 0.5) is on three sweeps: simulated once
    assert [s.pots for s in response] == list(dict.fromkeys(response_settings(cfg))) and len(response) == 10
    assert {s.input for s in response} == {"response"}
    assert all(0 < getattr(s.pots, k) < 1 for s in response for k in ("treble", "bass", "middle"))
    assert not {s.pots for s in response} & set(sweep_end_points(cfg))


def test_listed_settings_share_one_corpus_and_hold_some_out():
    cfg = DataConfig(knobs=KnobsConfig(settings=(PotSettings(), PotSettings(volume=0.8)), random_settings=2,
                                   held_out_settings=1))
    planned = plan_settings(cfg)
    assert [s.input for s in planned] == ["shared"] * 4
    assert [s.group for s in planned].count("test") == 1 and [s.group for s in planned].count("train") == 3


def test_impossible_designs_are_config_errors():
    with pytest.raises(ConfigError, match="validation group"):
        plan_settings(design(1, sweep_test_settings=False))
    with pytest.raises(ConfigError, match="volume_range"):
        design(8, volume_range=(0.5, 0.2))
    with pytest.raises(ConfigError, match="design_split"):
        design(8, design_split=(0.5, 0.0, 0.5))
    with pytest.raises(ConfigError, match="design_seconds"):
        design(8, design_seconds=float("nan"))
