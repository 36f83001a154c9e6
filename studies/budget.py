"""The trial and compute budgets of a study shared by any number of workers.

`n_trials` is the total number of trials the study should have, whoever runs them. Every trial
counts (complete, pruned, failed, running, queued) except:
- a trial of a crashed or stopped worker that was re-queued: its WAITING copy counts instead;
- a trial that was never trained: a surplus trial (if two workers ask for the last trial at the
  same moment, the one with the higher number ends unrun, FAIL with user attr `budget_exceeded`)
  or a duplicate proposal (FAIL with user attr `duplicate_of`, see studies/sampling.py).
So the study never trains more than `n_trials` models and never counts a model it did not train.

`total_samples` (budget.total_samples) is the study's compute: no trial starts once the trials
have trained that many samples (`samples_spent`), so studies with other samplers or pruners can be
compared at equal compute. A trial already running finishes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from optuna.trial import TrialState

from studies.recovery import RETRY_ATTR

EXCESS_ATTR = "budget_exceeded"
DUPLICATE_ATTR = "duplicate_of"


class BudgetExceeded(Exception):
    """Raised by the objective for a surplus trial; Optuna records it as FAIL."""


def never_trained(trial: Any) -> bool:
    """A trial ended before training: a surplus trial or a duplicate proposal."""
    return bool(trial.user_attrs.get(EXCESS_ATTR)) or DUPLICATE_ATTR in trial.user_attrs


def counted_trials(trials: list[Any]) -> list[Any]:
    """The trials that use up the budget (see the module docstring)."""
    replaced = {n for t in trials for n in t.system_attrs.get(RETRY_ATTR, [])}
    return [t for t in trials if t.number not in replaced and not never_trained(t)]


def remaining_trials(study: Any, n_trials: int) -> int:
    """Trials still to start (queued retries are to start, so they are not subtracted)."""
    started = [t for t in counted_trials(study.get_trials(deepcopy=False)) if t.state != TrialState.WAITING]
    return n_trials - len(started)


def trial_samples(trial: Any) -> int:
    """Training samples one trial used: its `samples_trained` when it ended training, else (pruned or
    stopped) the samples of its last report (studies/pruning.py), else 0."""
    if "samples_trained" in trial.user_attrs:
        return int(trial.user_attrs["samples_trained"])
    return int(max(trial.intermediate_values, default=0))


def samples_spent(study: Any) -> int:
    """Training samples the study's trials have used (`trial_samples` summed)."""
    return sum(trial_samples(t) for t in study.get_trials(deepcopy=False))


def budget_left(study: Any, n_trials: int, total_samples: int) -> bool:
    """Whether another trial may start: trials left (or no trial limit) and samples left (or no limit)."""
    return (not n_trials or remaining_trials(study, n_trials) > 0) and \
        (not total_samples or samples_spent(study) < total_samples)


def is_excess(study: Any, trial_number: int, n_trials: int) -> bool:
    """Whether `trial_number` lies beyond the budget among the counted trials before it."""
    before = [t for t in counted_trials(study.get_trials(deepcopy=False)) if t.number < trial_number]
    return len(before) >= n_trials


class BudgetCallback:
    """Optuna callback run after every trial: recover dead workers' trials, then stop the worker's
    optimize loop at the budget, on a stop signal, or when `should_stop()` says so."""

    def __init__(self, n_trials: int, recover: Callable[[Any], Any] | None = None,
                 should_stop: Callable[[], bool] | None = None, total_samples: int = 0) -> None:
        self.n_trials = n_trials
        self.total_samples = total_samples
        self.recover = recover
        self.should_stop = should_stop

    def __call__(self, study: Any, trial: Any) -> None:
        if self.recover is not None:
            self.recover(study)
        if (self.should_stop is not None and self.should_stop()) or \
                not budget_left(study, self.n_trials, self.total_samples):
            study.stop()
