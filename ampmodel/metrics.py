"""Whole-signal ESR accumulated over evaluation spans, pooled or per knob setting (torch only).

A mean of per-span ESRs over-weights quiet spans; the whole-signal ESR sums error energy and
target energy over every span first, as the papers report it. The ESR itself (pre-emphasis
convention included) is `losses.esr_parts`.

Across knob settings, pooling is not enough: the knobs (and each design setting's own stretch of
DI) spread the settings' levels over 50-100 dB, so the pooled ESR of many settings is the ESR of
the loudest one or two (in the main study's knob design one validation setting holds 68 % of the
pre-emphasised energy, one test setting 58 %; the median setting is 41-45 dB under the loudest).
`typical` is the knob-level number: each setting's own whole-signal ESR, averaged in dB over the
settings (their geometric mean), so every setting counts the same whatever its loudness and one
failed setting moves it by its share instead of swamping it; `worst_setting` shows the tail.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

import torch

from .losses import REPORTED_PRE_EMPHASIS, esr_parts

TINY_ESR = 1e-12  # a perfect setting counts as -120 dB in `typical` instead of taking its log of 0


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

    def typical(self, settings: Optional[Iterable[int]] = None) -> float:
        """The typical setting's ESR: per-setting ESRs averaged in dB (geometric mean); nan if none."""
        values = self._values(settings)
        if not values:
            return math.nan
        return math.exp(sum(math.log(max(v, TINY_ESR)) for v in values) / len(values))

    def mean_over_settings(self, settings: Optional[Iterable[int]] = None) -> float:
        """Mean of the per-setting ESRs: every knob setting counts the same, quiet ones included."""
        values = self._values(settings)
        return sum(values) / len(values) if values else math.nan

    def worst_setting(self, settings: Optional[Iterable[int]] = None) -> float:
        values = self._values(settings)
        return max(values) if values else math.nan

    def _values(self, settings: Optional[Iterable[int]]) -> list[float]:
        per_setting = self.per_setting()
        keys = per_setting if settings is None else [s for s in settings if s in per_setting]
        return [per_setting[s] for s in keys]
