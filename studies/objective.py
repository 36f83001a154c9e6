"""The Optuna objective: sampled parameters -> RunConfig -> `train()` -> validation ESR.

Each trial records on itself the worker running it, the study fingerprint it runs under, its
MLflow run id and the model's cost, sets constraint values (MACs/sample, real-time factor) for
constrained samplers, and leaves its MLflow run tagged with the final Optuna state. Exceptions
propagate so Optuna marks the trial FAIL (the runner optimises with catch=(Exception,), so the
study carries on). A trial whose parameters were tried before is not trained (studies/sampling.py);
a stop signal during training fails the trial at its next safe point, with its run closed KILLED
(studies/stopping.py).
"""

from __future__ import annotations

import math
from typing import Any

import optuna

from foundation.errors import StopRequested
from studies import mlflow_runs
from studies.budget import DUPLICATE_ATTR, EXCESS_ATTR, BudgetExceeded, is_excess
from studies.fingerprint import FINGERPRINT_ATTR
from studies.recovery import WORKER_ATTR
from studies.sampling import MAX_DUPLICATES_IN_A_ROW, DuplicateParams, find_duplicate
from studies.space import apply_params, effective_values
from studies.spec import StudySpec
from studies.stopping import GracefulStop
from studies.workers import worker_id

ERROR_ATTR = "error"
TIMED_OUT_ATTR = "timed_out"  # the safety timeout stopped the trial before its compute budget was spent
COST_ATTRS = ("params", "receptive_field_samples", "macs_per_sample", "rtf")
# The validation numbers beside the objective, on every complete trial (studies/report.py shows them).
VAL_ATTRS = ("esr_geomean_floored", "esr_mean_scored_settings", "esr_worst_scored_setting",
             "esr_geomean_unseen_settings", "esr_geomean_seen_settings")


class TrialTimedOut(Exception):
    """The wall-clock safety timeout ended a trial's fit before its compute budget: FAIL, not ranked."""


class TrialObjective:
    """Callable objective bound to one study, its parent MLflow run and its trial budget."""

    def __init__(self, spec: StudySpec, parent_run_id: str, tracking_uri: str, n_trials: int,
                 fingerprint: str = "", stop: GracefulStop | None = None) -> None:
        self.spec = spec
        self.parent_run_id = parent_run_id
        self.tracking_uri = tracking_uri
        self.n_trials = n_trials
        self.fingerprint = fingerprint
        self.stop = stop or GracefulStop()  # not entered: no handlers, never requested
        self.duplicates_in_a_row = 0
        self.exhausted = False  # the sampler only proposes parameters tried before
        self.stopped_trial: int | None = None  # the trial a stop signal (or a tracking problem) failed
        self.tracking_problem: str | None = None  # why the study's runs cannot be written (mlflow_runs)

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        trial.set_user_attr(WORKER_ATTR, worker_id())  # lets a restart detect this trial if we die
        if self.fingerprint:
            trial.set_user_attr(FINGERPRINT_ATTR, self.fingerprint)
        if self.n_trials and is_excess(trial.study, trial.number, self.n_trials):
            # Two workers asked for the last trial at once; this one is surplus and never trains.
            trial.set_user_attr(EXCESS_ATTR, True)
            trial.study.stop()
            raise BudgetExceeded(f"study budget of {self.n_trials} trials already taken by other workers")
        try:
            return self._train(trial)
        except DuplicateParams:
            raise  # never trained: no MLflow run
        except StopRequested as err:
            self._stopped(trial, err)
            raise
        except optuna.TrialPruned as err:
            self._finish_run(trial, "PRUNED", error=str(err), run_status="FINISHED")
            raise
        except Exception as err:
            if self.stop.requested:  # MLflow or Lightning may wrap the StopRequested raised inside them
                stop = StopRequested(self.stop.signum, f"{type(err).__name__}: {err}")
                self._stopped(trial, stop)
                raise stop from err
            problem = self._tracking_problem()
            if problem is not None:  # the store's fault, not the trial's: re-queued, not counted
                self.tracking_problem = problem
                self.stopped_trial = trial.number
                trial.set_user_attr(ERROR_ATTR, f"not run to its end: {problem}"[:2000])
                trial.study.stop()
                raise mlflow_runs.TrackingUnavailable(problem) from err
            message = f"{type(err).__name__}: {err}"
            trial.set_user_attr(ERROR_ATTR, message[:2000])
            self._finish_run(trial, "FAIL", error=message, run_status="FAILED")
            raise

    def _tracking_problem(self) -> str | None:
        try:
            return mlflow_runs.tracking_problem(self.tracking_uri, self.parent_run_id)
        except Exception:  # cannot tell (the store may be down): the trial's failure stands
            return None

    def _stopped(self, trial: optuna.Trial, err: StopRequested) -> None:
        message = (f"{err}: the worker was stopped mid-trial (re-queued with the same parameters; a stop does not "
                   "count against storage.max_retries)")
        trial.set_user_attr(ERROR_ATTR, message)
        self._finish_run(trial, "FAIL", error=message, run_status="KILLED")
        self.stopped_trial = trial.number
        trial.study.stop()

    def suggest_config(self, trial: optuna.Trial):
        """Sample every active parameter (conditional ones only when their condition holds)."""
        effective = effective_values(self.spec.base)
        values: dict[str, Any] = {}
        for param in self.spec.space:
            if param.active(effective):
                values[param.name] = effective[param.name] = param.suggest(trial)
        return apply_params(self.spec.base, values, run_name=mlflow_runs.trial_run_name(self.spec.name, trial.number))

    def _train(self, trial: optuna.Trial) -> float | tuple[float, float]:
        from training.train import TIME_LIMIT, train  # heavy import (lightning), only inside workers

        cfg = self.suggest_config(trial)
        self._skip_duplicate(trial)
        objective = self.spec.objective
        macs = _analytic_macs(cfg)
        if objective.max_macs_per_sample > 0:
            # MACs follow from the architecture alone: skip training models that cannot qualify.
            trial.set_constraint("max_macs_per_sample", macs - objective.max_macs_per_sample)
            if macs > objective.max_macs_per_sample:
                trial.set_user_attr("macs_per_sample", macs)
                raise optuna.TrialPruned(
                    f"infeasible: {macs:.0f} MACs/sample > max_macs_per_sample {objective.max_macs_per_sample:.0f}")
        callbacks = []
        if self.spec.options.pruner.kind != "none" and not objective.multi_objective:
            from studies.pruning import SamplePruningCallback

            callbacks.append(SamplePruningCallback(trial))
        self.stop.check()
        result = train(cfg, callbacks=callbacks, parent_run_id=self.parent_run_id,
                       tags=mlflow_runs.trial_tags(self.spec.name, trial.number, self.fingerprint),
                       tracking_uri=self.tracking_uri, progress=False, stop=self.stop)
        record_training(trial, result)
        if objective.min_rtf > 0:
            trial.set_constraint("min_rtf", objective.min_rtf - float(result.cost.get("rtf", 0.0)))
        value = result.val_esr_tail_aware
        if not math.isfinite(value):
            raise ValueError(f"validation ESR is {value}")
        if result.stopped_by == TIME_LIMIT:
            trial.set_user_attr(TIMED_OUT_ATTR, True)
            raise TrialTimedOut(
                f"budget.trial_max_minutes ({cfg.train.max_minutes:g}) stopped the fit after {result.samples:,} of "
                f"{cfg.train.max_samples:,} training samples (validation ESR {value:.4g} then): not ranked with trials "
                "that trained their whole budget; raise trial_max_minutes, or lower budget.trial_samples")
        mlflow_runs.record_trial_outcome(self.tracking_uri, self.parent_run_id, self.spec.name, trial.number,
                                         self.spec.base.experiment, "COMPLETE")
        if objective.multi_objective:
            return value, float(result.cost["macs_per_sample"])
        return value

    def _skip_duplicate(self, trial: optuna.Trial) -> None:
        earlier = find_duplicate(trial.study, trial._trial_id)
        if earlier is None:
            self.duplicates_in_a_row = 0
            return
        trial.set_user_attr(DUPLICATE_ATTR, earlier)
        self.duplicates_in_a_row += 1
        if self.duplicates_in_a_row >= MAX_DUPLICATES_IN_A_ROW:
            self.exhausted = True
            trial.study.stop()
        raise DuplicateParams(f"same parameters as trial {earlier}; sampling again instead of training them twice")

    def _finish_run(self, trial: optuna.Trial, state: str, error: str, run_status: str) -> None:
        try:
            run_id = mlflow_runs.record_trial_outcome(
                self.tracking_uri, self.parent_run_id, self.spec.name, trial.number,
                self.spec.base.experiment, state, error=error, run_status=run_status,
                fingerprint=self.fingerprint)
            trial.set_user_attr(mlflow_runs.RUN_ID_ATTR, run_id)
        except Exception as err:  # tracking trouble must not mask the trial's own error
            optuna.logging.get_logger("ampstudy").warning(f"could not tag MLflow run of trial {trial.number}: {err}")


def record_training(trial: optuna.Trial, result: Any) -> None:
    """What a trial trained and where (so equal compute can be checked), its cost and its validation
    numbers beside the objective, as trial user attrs."""
    trial.set_user_attr(mlflow_runs.RUN_ID_ATTR, result.run_id)
    trial.set_user_attr("epochs", result.epochs)
    trial.set_user_attr("samples_trained", result.samples)
    trial.set_user_attr("stopped_by", result.stopped_by)
    trial.set_user_attr("device", result.device)
    trial.set_user_attr("threads", result.threads)
    trial.set_user_attr("train_seconds", round(result.wall_seconds, 2))
    for key in COST_ATTRS:
        if key in result.cost:
            trial.set_user_attr(key, float(result.cost[key]))
    for key in VAL_ATTRS:
        value = result.val_metrics.get(key, math.nan)
        if isinstance(value, float) and math.isfinite(value):
            trial.set_user_attr(f"val_{key}", value)


def _analytic_macs(cfg) -> float:
    from ampmodel.cost import analytic_macs_per_sample

    return float(analytic_macs_per_sample(cfg.model))
