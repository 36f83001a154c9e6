"""Samplers and pruners of a study, one random stream per worker, and no parameter set trained twice.

Seeds: with `sampler.seed = S >= 0`, worker `i` of the `k`-th `study run` of the study (k counted
in the study's storage, so separately started processes and resumes all differ) samples from
seed `stream_seed(S, k, i)`: S itself for the first worker of the first run, else a hash of
(S, k, i). A study is reproducible given its worker layout (the order of its
runs and their --workers), and no two workers or resumes replay each other's random start-up
points, as one unchanged seed did.

Duplicates: streams differing is not enough in a small discrete space (and TPE can propose a
point it already has), so before training, a trial whose parameters equal those of an earlier
trial (any state, except trials that were themselves duplicates or surplus) is not trained: it
ends FAIL with user attr `duplicate_of`, does not use the budget, and the worker samples again.
Retries of crashed trials and enqueued trials keep their fixed parameters and are not checked.
After `MAX_DUPLICATES_IN_A_ROW` such proposals in a row the space is taken as exhausted.
"""

from __future__ import annotations

import hashlib
from typing import Any

from studies.budget import never_trained
from studies.recovery import RETRY_ATTR
from studies.spec import StudySpec

MAX_DUPLICATES_IN_A_ROW = 30


class DuplicateParams(Exception):
    """Raised by the objective for a trial whose parameters were tried before; Optuna records FAIL."""


def stream_seed(seed: int, run_number: int, worker_index: int) -> int | None:
    """The sampler seed of worker `worker_index` in run `run_number`; None for seed -1 (random)."""
    if seed < 0:
        return None
    if run_number == 0 and worker_index == 0:
        return seed  # a study run once by one worker samples exactly as `seed` says
    digest = hashlib.sha256(f"ampstudy-sampler/{seed}/{run_number}/{worker_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def make_sampler(spec: StudySpec, run_number: int = 0, worker_index: int = 0) -> Any:
    import optuna

    s = spec.options.sampler
    seed = stream_seed(s.seed, run_number, worker_index)
    if s.kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.startup_trials, multivariate=s.multivariate,
                                          group=s.multivariate, constant_liar=True)
    if s.kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.kind == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)
    if s.kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=s.startup_trials)


def make_pruner(spec: StudySpec) -> Any:
    """The study file's pruner; its steps are training samples (studies/pruning.py)."""
    import optuna

    p = spec.options.pruner
    if p.kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_samples)
    if p.kind == "percentile":
        return optuna.pruners.PercentilePruner(p.percentile, n_startup_trials=p.startup_trials,
                                               n_warmup_steps=p.warmup_samples)
    if p.kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.min_samples, max_resource=spec.base.train.max_samples,
                                              reduction_factor=p.reduction_factor)
    if p.kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=p.min_samples, reduction_factor=p.reduction_factor)
    return optuna.pruners.NopPruner()


def find_duplicate(study: Any, trial_id: int) -> int | None:
    """The number of an earlier trial with exactly the parameters of trial `trial_id`, or None."""
    this = study._storage.get_trial(trial_id)
    if RETRY_ATTR in this.system_attrs or "fixed_params" in this.system_attrs:
        return None
    for other in study.get_trials(deepcopy=False):
        if other.number < this.number and other.params == this.params and not never_trained(other):
            return other.number
    return None
