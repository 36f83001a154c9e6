"""The trial budget of a study shared by any number of workers.

`n_trials` is the total number of trials the study should have, whoever runs them. Every trial
counts (complete, pruned, failed, running, queued) except a trial of a crashed worker that was
re-queued: its WAITING copy counts instead. A worker stops asking for trials once the count is
reached; if two workers ask for the last trial at the same moment, the one with the higher trial
number sees it is surplus and ends it unrun (FAIL, user attr `budget_exceeded`), so the study
never trains more than `n_trials` models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from optuna.trial import TrialState

from studies.storage import RETRY_ATTR

EXCESS_ATTR = "budget_exceeded"


class BudgetExceeded(Exception):
    """Raised by the objective for a surplus trial; Optuna records it as FAIL."""


def counted_trials(trials: list[Any]) -> list[Any]:
    """The trials that use up the budget (see the module docstring)."""
    replaced = {n for t in trials for n in t.system_attrs.get(RETRY_ATTR, [])}
    return [t for t in trials if t.number not in replaced and not t.user_attrs.get(EXCESS_ATTR)]


def remaining_trials(study: Any, n_trials: int) -> int:
    """Trials still to start (queued retries are to start, so they are not subtracted)."""
    started = [t for t in counted_trials(study.get_trials(deepcopy=False)) if t.state != TrialState.WAITING]
    return n_trials - len(started)


def is_excess(study: Any, trial_number: int, n_trials: int) -> bool:
    """Whether `trial_number` lies beyond the budget among the counted trials before it."""
    before = [t for t in counted_trials(study.get_trials(deepcopy=False)) if t.number < trial_number]
    return len(before) >= n_trials


class BudgetCallback:
    """Optuna callback run after every trial: recover dead workers' trials, stop at the budget."""

    def __init__(self, n_trials: int, recover: Callable[[Any], Any] | None = None) -> None:
        self.n_trials = n_trials
        self.recover = recover

    def __call__(self, study: Any, trial: Any) -> None:
        if self.recover is not None:
            self.recover(study)
        if self.n_trials and remaining_trials(study, self.n_trials) <= 0:
            study.stop()
