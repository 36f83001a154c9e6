"""Whole-signal ESR accumulated over evaluation spans, pooled or per knob setting, and the
tail-aware number that ranks models across knob settings (torch only).

A mean of per-span ESRs over-weights quiet spans; the whole-signal ESR sums error energy and
target energy over every span first, as the papers report it. The ESR itself (pre-emphasis
convention included) is `losses.esr_parts`.

Across knob settings, pooling is not enough: the knobs (and each design setting's own stretch of
DI) spread the settings' levels over many tens of dB, so the pooled ESR of many settings is the
ESR of the loudest one or two. Each setting's own whole-signal ESR is the unit instead, and three
numbers summarise them:

- `geometric_mean`: per-setting ESRs averaged in dB, every setting counting the same whatever its
  loudness. With `floor`, each setting's ESR is first raised to at least the floor.
- `worst_setting` and `mean`: the tail and the arithmetic mean.
- `tail_aware_esr(geomean, worst)`: the number studies rank by (see its docstring).

Why a floor (AUDIBILITY_FLOOR_ESR = 1e-3, error energy 30 dB under the signal): the geometric mean
trades settings in dB, so an ESR of 1e-6 at one easy setting would buy back a factor of 1000 at
another. Below 1e-3 a setting is ten times under what Neural Amp Modeler's trainer calls a great
model (0.01); a player hears no gain from pushing it lower, so it earns nothing in the ranking.

Why a tail term: the geometric mean of 28 settings at 0.03 and one at 35 is 0.038, which beats a
model at 0.05 on every setting; one broken knob position is a broken amp to the player who stops
there. `tail_aware_esr` keeps the floored geometric mean while the worst setting stays within
TAIL_RATIO (10x, 10 dB) of it; past that, the worst setting drags it up.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

import torch

from .losses import REPORTED_PRE_EMPHASIS, esr_parts

TINY_ESR = 1e-12  # a perfect setting counts as -120 dB in an unfloored geometric mean instead of log(0)
AUDIBILITY_FLOOR_ESR = 1e-3  # per-setting ESRs are floored here in the ranking numbers (module docstring)
TAIL_RATIO = 10.0  # the worst setting may be this many times the floored geometric mean before it counts


def tail_aware_esr(geomean: float, worst: float, tail_ratio: float = TAIL_RATIO) -> float:
    """The floored geometric mean `geomean`, raised when the worst setting exceeds `tail_ratio` x it:
    then it is the geometric mean of `geomean` and `worst / tail_ratio` (so a setting 100x worse than
    the rest scores ~3x worse, 10000x worse ~30x). nan if either is nan."""
    if math.isnan(geomean) or math.isnan(worst):
        return math.nan
    excess = worst / (tail_ratio * geomean) if geomean > 0 else math.inf
    return geomean * math.sqrt(excess) if excess > 1 else geomean


class ESRAccumulator:
    def __init__(self, pre_emphasis: float = REPORTED_PRE_EMPHASIS) -> None:
        self.pre_emphasis = pre_emphasis
        self.error: dict[int, float] = {}
        self.energy: dict[int, float] = {}

    def update(self, pred: torch.Tensor, target: torch.Tensor, setting: torch.Tensor) -> None:
        """pred/target (B, 1, T): B signals; setting (B,): the knob-setting index of each."""
        error, energy = esr_parts(pred.detach().double(), target.detach().double(), self.pre_emphasis, per_item=True)
        for s, e, t in zip(setting.tolist(), error.tolist(), energy.tolist()):
            self.error[s] = self.error.get(s, 0.0) + e
            self.energy[s] = self.energy.get(s, 0.0) + t

    def settings(self) -> list[int]:
        return sorted(self.error)

    def esr(self, settings: Optional[Iterable[int]] = None) -> float:
        """Whole-signal ESR of the given settings (all by default) pooled together; nan if none."""
        keys = self.settings() if settings is None else [s for s in settings if s in self.error]
        if not keys:
            return math.nan
        return sum(self.error[s] for s in keys) / max(sum(self.energy[s] for s in keys), 1e-12)

    def per_setting(self) -> dict[int, float]:
        return {s: self.error[s] / max(self.energy[s], 1e-12) for s in self.settings()}

    def geometric_mean(self, settings: Optional[Iterable[int]] = None, floor: float = TINY_ESR) -> float:
        """Per-setting ESRs, each at least `floor`, averaged in dB (their geometric mean); nan if none."""
        values = self._values(settings)
        if not values:
            return math.nan
        return math.exp(sum(math.log(max(v, floor)) for v in values) / len(values))

    def mean(self, settings: Optional[Iterable[int]] = None) -> float:
        """Arithmetic mean of the per-setting ESRs; nan if none."""
        values = self._values(settings)
        return sum(values) / len(values) if values else math.nan

    def worst_setting(self, settings: Optional[Iterable[int]] = None) -> float:
        values = self._values(settings)
        return max(values) if values else math.nan

    def tail_aware(self, settings: Optional[Iterable[int]] = None) -> float:
        """`tail_aware_esr` of these settings: floored geometric mean, raised by a broken worst setting."""
        return tail_aware_esr(self.geometric_mean(settings, AUDIBILITY_FLOOR_ESR), self.worst_setting(settings))

    def _values(self, settings: Optional[Iterable[int]]) -> list[float]:
        per_setting = self.per_setting()
        keys = per_setting if settings is None else [s for s in settings if s in per_setting]
        return [per_setting[s] for s in keys]
