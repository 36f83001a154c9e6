"""A study file (TOML) as frozen, validated dataclasses: `load_study_spec(path) -> StudySpec`.

Everything that could stop a study halfway (unknown keys, empty ranges, a bad storage URL, an
unknown sampler, a search value the model would reject) is caught here, before any data is
simulated or any trial runs, with a ConfigError naming the dotted field. See studies/README.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ampmodel.config import EXPORTABLE_FAMILIES, PRESETS
from foundation.configs import from_mapping, load_toml, require
from foundation.errors import ConfigError
from studies.space import SearchParam, effective_values, parse_space
from studies.storage import check_storage_url
from training.run_config import RunConfig, run_config_from_mapping

SAMPLERS = ("tpe", "random", "qmc", "nsga2", "gp")
PRUNERS = ("median", "percentile", "hyperband", "successive_halving", "none")
MULTI_FIDELITY = ("hyperband", "successive_halving")  # rungs from pruner.min_samples to budget.trial_samples
METRICS = ("val_esr_tail_aware",)


@dataclass(frozen=True)
class SamplerSpec:
    kind: str = "tpe"
    seed: int = -1  # -1 = fresh randomness; >= 0 reproducible (worker k of a run uses seed + k)
    startup_trials: int = 8  # random trials before TPE/GP start modelling
    multivariate: bool = True  # TPE: model parameters jointly (with group=True for conditional ones)

    def __post_init__(self) -> None:
        require(self.kind in SAMPLERS, "kind", f"'{self.kind}' is not one of {', '.join(SAMPLERS)}")
        require(self.seed >= -1, "seed", "must be >= 0, or -1 for a random seed")
        require(self.startup_trials >= 0, "startup_trials", "must be >= 0")


@dataclass(frozen=True)
class PrunerSpec:
    kind: str = "median"
    startup_trials: int = 4  # median/percentile: complete trials before anything is pruned
    warmup_samples: int = 0  # median/percentile: training samples a trial trains before it may be pruned
    min_samples: int = 0  # hyperband/successive_halving: the first rung, in training samples
    percentile: float = 50.0  # kind = "percentile": prune below this percentile
    reduction_factor: int = 3  # hyperband/successive_halving: 1/reduction_factor of the trials go on at each rung

    def __post_init__(self) -> None:
        require(self.kind in PRUNERS, "kind", f"'{self.kind}' is not one of {', '.join(PRUNERS)}")
        require(self.startup_trials >= 0, "startup_trials", "must be >= 0")
        require(self.warmup_samples >= 0, "warmup_samples", "must be >= 0")
        require(self.min_samples >= 0, "min_samples", "must be >= 0")
        require(0 < self.percentile < 100, "percentile", "must be in (0, 100)")
        require(self.reduction_factor >= 2, "reduction_factor", "must be >= 2")


@dataclass(frozen=True)
class ObjectiveSpec:
    metric: str = "val_esr_tail_aware"  # minimised; of the best checkpoint (training/evaluate.py PRIMARY)
    multi_objective: bool = False  # true: minimise (val_esr_tail_aware, macs_per_sample) -> a Pareto front
    max_macs_per_sample: float = 0.0  # constraint; 0 = none
    min_rtf: float = 0.0  # constraint on the real-time factor measured after training; 0 = none

    def __post_init__(self) -> None:
        require(self.metric in METRICS, "metric", f"'{self.metric}' is not one of {', '.join(METRICS)}" + (
            " (val_esr was renamed when its meaning changed to the tail-aware ESR)" if self.metric == "val_esr" else ""))
        require(self.max_macs_per_sample >= 0, "max_macs_per_sample", "must be >= 0 (0 = no limit)")
        require(self.min_rtf >= 0, "min_rtf", "must be >= 0 (0 = no limit)")


@dataclass(frozen=True)
class BudgetSpec:
    n_trials: int = 0  # total trials of the study (failed ones count, crash re-queues don't); 0 = no limit
    timeout_minutes: float = 0.0  # per `study run` invocation (each worker); 0 = no limit
    # A trial's compute: training samples (steps x batch_size x segment_samples; overrides
    # base.train.max_samples). Equal on every machine and under any load, and part of the fingerprint.
    trial_samples: int = 0
    # The study's compute: no trial starts once its trials have trained this many samples in all
    # (studies/budget.py); 0 = no limit.
    total_samples: int = 0
    # A safety timeout on one trial's fit (overrides base.train.max_minutes). A trial it stops has not had
    # its compute: it ends FAIL with user attr `timed_out`, never ranked with the others.
    trial_max_minutes: float = 0.0

    def __post_init__(self) -> None:
        require(self.n_trials >= 0, "n_trials", "must be >= 0 (0 = no limit)")
        require(self.timeout_minutes >= 0, "timeout_minutes", "must be >= 0 (0 = no limit)")
        require(self.n_trials > 0 or self.timeout_minutes > 0 or self.total_samples > 0, "n_trials",
                "give n_trials, total_samples and/or timeout_minutes: a study needs a budget")
        require(self.total_samples >= 0, "total_samples", "must be >= 0 (0 = no limit)")
        require(self.trial_samples >= 0, "trial_samples", "must be >= 0 (0 = base.train.max_samples)")
        require(self.trial_max_minutes >= 0, "trial_max_minutes", "must be >= 0 (0 = no limit)")


@dataclass(frozen=True)
class StorageSpec:
    url: str = ""  # "" = default (SQLite/journal file under mlruns/); or sqlite:///, postgresql://, journal:PATH
    heartbeat_seconds: int = 30  # SQL storages: a RUNNING trial without a heartbeat for grace_seconds is failed
    grace_seconds: int = 120
    max_retries: int = 2  # times a trial of a crashed/killed worker is re-queued with the same parameters

    def __post_init__(self) -> None:
        if self.url:
            check_storage_url(self.url, "url")
        require(self.heartbeat_seconds >= 1, "heartbeat_seconds", "must be >= 1")
        require(self.grace_seconds > self.heartbeat_seconds, "grace_seconds", "must be > heartbeat_seconds")
        require(self.max_retries >= 0, "max_retries", "must be >= 0")


@dataclass(frozen=True)
class StudyOptions:
    """The top-level keys of a study file besides [base] and [space]."""

    name: str = ""
    description: str = ""
    registered_model: str = "bassman-wavenet"  # MLflow Model Registry name used by `ampstudy promote`
    exportable_only: bool = False  # true: only model families `ampstudy export` writes as .nam files
    first_trial_from_base: bool = False  # true: trial 0 trains [base]'s values of the searched settings
    tracking_uri: str = ""  # "" = MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    pruner: PrunerSpec = field(default_factory=PrunerSpec)
    budget: BudgetSpec = field(default_factory=BudgetSpec)
    storage: StorageSpec = field(default_factory=StorageSpec)

    def __post_init__(self) -> None:
        require(bool(self.name.strip()), "name", "every study needs a name (it identifies the study in storage)")
        require(all(ch.isalnum() or ch in "-_." for ch in self.name), "name",
                f"'{self.name}': use letters, digits, '-', '_' and '.' only")
        require(bool(self.registered_model.strip()), "registered_model", "must not be empty")
        if self.objective.multi_objective:
            require(self.pruner.kind == "none", "pruner.kind",
                    "Optuna cannot prune multi-objective studies; set kind = \"none\"")
        if self.pruner.kind in MULTI_FIDELITY:
            require(self.budget.trial_samples > 0, "budget.trial_samples",
                    f"pruner kind \"{self.pruner.kind}\" needs the most a trial trains: give trial_samples")
            require(0 < self.pruner.min_samples < self.budget.trial_samples, "pruner.min_samples",
                    f"must be > 0 and < budget.trial_samples ({self.budget.trial_samples}): the first rung")


@dataclass(frozen=True)
class StudySpec:
    options: StudyOptions
    base: RunConfig
    space: tuple[SearchParam, ...]
    path: str = ""  # the file it came from ("" when built in code)

    # Short-hands for the common fields.
    @property
    def name(self) -> str:
        return self.options.name

    @property
    def objective(self) -> ObjectiveSpec:
        return self.options.objective

    @property
    def budget(self) -> BudgetSpec:
        return self.options.budget

    @property
    def directions(self) -> list[str]:
        return ["minimize", "minimize"] if self.objective.multi_objective else ["minimize"]


def study_spec_from_mapping(data: Mapping[str, Any], path: str = "") -> StudySpec:
    """Validate a parsed study file; errors are 'dotted.field: message'."""
    table = dict(data)
    base_table = table.pop("base", None)
    space_table = table.pop("space", None)
    options = from_mapping(StudyOptions, table)
    if base_table is not None and not isinstance(base_table, Mapping):
        raise ConfigError("base: expected a table ([base], [base.data], [base.model], [base.train])")
    try:
        base = run_config_from_mapping(base_table or {})
    except ConfigError as err:
        raise ConfigError(f"base.{err}") from None
    overrides = {name: value for name, value in (("max_samples", options.budget.trial_samples),
                                                 ("max_minutes", options.budget.trial_max_minutes)) if value > 0}
    if overrides:
        base = dataclasses.replace(base, train=dataclasses.replace(base.train, **overrides))
    if options.exportable_only:
        _check_exportable(base, space_table)
    space = parse_space(space_table, base)
    if options.objective.multi_objective and not space:
        raise ConfigError("space: a multi-objective study needs a search space")
    _check_finite(options)
    spec = StudySpec(options=options, base=base, space=space, path=path)
    if options.first_trial_from_base:
        base_params(spec)  # each base value must be one the space can take
    return spec


def base_params(spec: StudySpec) -> dict[str, Any]:
    """The searched settings' values in [base] (those active there), checked against the space."""
    effective = effective_values(spec.base)
    values = {}
    for param in spec.space:
        if not param.active(effective):
            continue
        value, d = effective.get(param.name), param.dim
        inside = value in d.choices if d.choices else (
            isinstance(value, (int, float)) and not isinstance(value, bool) and d.low <= value <= d.high)
        if not inside:
            raise ConfigError(f"first_trial_from_base: base {param.name} = {value!r} is not in the searched "
                              f"{'choices' if d.choices else 'range'} of space.{param.name}")
        values[param.name] = value
    return values


def load_study_spec(path: str | Path) -> StudySpec:
    """Read and validate a study TOML file; ConfigError messages start with the file name."""
    try:
        return study_spec_from_mapping(load_toml(path), str(path))
    except ConfigError as err:
        message = str(err)
        raise ConfigError(message if message.startswith(str(path)) else f"{path}: {message}") from None


def _check_exportable(base: RunConfig, space_table: Any) -> None:
    """exportable_only: the base family and every searched family must export to .nam (checked
    before the space, whose own check would only say that a family does not fit the base)."""
    model = ((space_table or {}).get("model") or {}) if isinstance(space_table, Mapping) else {}

    def choices(key: str) -> list:
        searched = model.get(key) if isinstance(model, Mapping) else None
        found = searched.get("choices", []) if isinstance(searched, Mapping) else []
        return found if isinstance(found, list) else []

    presets = [PRESETS[name].family for name in choices("preset") if name in PRESETS]  # unknown names: the space says
    families = {base.model.family, *choices("family"), *presets}
    wrong = sorted(str(f) for f in families - set(EXPORTABLE_FAMILIES))
    require(not wrong, "exportable_only", f"the study would train family {', '.join(wrong)}, which ampstudy export "
            f"cannot write; set [base.model] family = \"nam\" (e.g. preset = \"nam-standard\") and search only "
            f"{', '.join(EXPORTABLE_FAMILIES)}")


def _check_finite(options: StudyOptions) -> None:
    for name in ("max_macs_per_sample", "min_rtf"):
        require(math.isfinite(getattr(options.objective, name)), f"objective.{name}", "must be finite")
