"""Pruning on training samples: the resource every pruner of a study counts is compute, not epochs
or time.

After each validation a trial reports its best tail-aware validation ESR so far, what it would
return if stopped there (its best checkpoint), at step = the training samples it has consumed so far
(optimiser steps x batch_size x segment_samples). The best so far, not the latest: the tail-aware
number of one epoch jumps with the worst knob setting (one setting can move it several-fold from
one epoch to the next), and a pruner comparing single epochs would prune by that noise. Steps in
samples make the pruner's thresholds (`pruner.warmup_samples`, Hyperband's and successive
halving's rungs from `pruner.min_samples` up to `budget.trial_samples`) mean the same compute on a
GPU, an idle CPU and a loaded one.
`studies/sampling.py` `make_pruner(spec)` builds the Optuna pruner a study file names.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import optuna

from training.lightning_module import MONITOR
from training.train import samples_per_step


class SamplePruningCallback(pl.Callback):
    """Report the best MONITOR so far to the trial at every validation, keyed by training samples;
    prune when told."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.best = math.inf

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or MONITOR not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[MONITOR])
        samples = trainer.global_step * samples_per_step(pl_module.run_config)  # its batch shape, resolved
        if not math.isfinite(value):
            return
        self.best = min(self.best, value)
        self.trial.report(self.best, step=samples)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after {samples:,} training samples: best validation ESR (tail-aware) "
                                     f"{self.best:.4g} ranks below the trials it was compared with at that point")
