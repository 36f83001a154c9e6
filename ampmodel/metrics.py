"""Whole-signal ESR accumulated over batches, overall and per knob setting (torch only).

A mean of per-batch ESRs over-weights quiet windows; the whole-signal ESR sums error energy and
target energy over every batch first, as the papers report it.
"""

from __future__ import annotations

import torch

# Every run reports ESR after this first-order pre-emphasis, whatever its loss uses, so that trials
# searching over the loss's pre-emphasis stay comparable (0.95 as in Damskägg et al. 2019).
REPORTED_PRE_EMPHASIS = 0.95


class ESRAccumulator:
    def __init__(self, pre_emphasis: float = REPORTED_PRE_EMPHASIS) -> None:
        self.pre_emphasis = pre_emphasis
        self.error: dict[int, float] = {}
        self.energy: dict[int, float] = {}

    def update(self, pred: torch.Tensor, target: torch.Tensor, setting: torch.Tensor,
               mask: torch.Tensor | None = None) -> None:
        """pred/target (B,1,T); setting (B,) knob-setting index; mask (B,1,T) zeroes samples that an
        overlapping window already counted, so every sample of the signal counts exactly once."""
        pred, target = pred.detach().double(), target.detach().double()
        if self.pre_emphasis:
            pred = pred[..., 1:] - self.pre_emphasis * pred[..., :-1]
            target = target[..., 1:] - self.pre_emphasis * target[..., :-1]
        weight = torch.ones_like(target) if mask is None else mask.detach().double()[..., -target.shape[-1]:]
        err = (weight * (target - pred) ** 2).flatten(1).sum(1)
        energy = (weight * target**2).flatten(1).sum(1)
        for i, s in enumerate(setting.tolist()):
            self.error[s] = self.error.get(s, 0.0) + float(err[i])
            self.energy[s] = self.energy.get(s, 0.0) + float(energy[i])

    def esr(self, settings: list[int] | None = None) -> float:
        """Whole-signal ESR of the given settings (all by default) pooled together: error energy
        over target energy, as the training loss sees them."""
        keys = list(self.error) if settings is None else [s for s in settings if s in self.error]
        energy = sum(self.energy[s] for s in keys)
        return sum(self.error[s] for s in keys) / max(energy, 1e-12) if keys else float("nan")

    def mean_over_settings(self) -> float:
        """Mean of the per-setting ESRs: every knob setting counts the same, quiet ones included."""
        per_setting = self.per_setting()
        return sum(per_setting.values()) / len(per_setting) if per_setting else float("nan")

    def held_out_and_seen(self, held_out: list[int] | tuple[int, ...]) -> tuple[list[int], list[int]]:
        """Accumulated settings split into (held out, seen in training)."""
        settings = list(self.error)
        return [s for s in settings if s in held_out], [s for s in settings if s not in held_out]

    def per_setting(self) -> dict[int, float]:
        return {s: self.error[s] / max(self.energy[s], 1e-12) for s in sorted(self.error)}
