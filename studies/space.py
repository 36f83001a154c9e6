"""The search space of a study: `[space.model]` / `[space.train]` tables of ranges or choices.

Each entry names a field of the run config (`model.channels`, `train.learning_rate`, ...) or one of
two WaveNet shape knobs, `model.layers_per_stack` and `model.stacks`, which together set
`model.dilations` to (1, 2, ..., 2^(layers_per_stack-1)) repeated `stacks` times (the paper's
dilation pattern), and `model.preset`, whose choices are presets (each one's architecture, with
[base.model]'s knob conditioning; e.g. NAM's "nam-standard" against its A2 "nam-a2", other shape
values conditional on it with `when`). `apply_params(base, values)` turns sampled values into a
RunConfig; it is pure, so the same code validates the space at load time and builds every trial's
config.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ampmodel.config import WaveNetConfig
from foundation.configs import flatten, from_mapping, merged, to_dict, unflatten
from foundation.errors import ConfigError
from training.run_config import ARRAY_FIELDS, RunConfig, TrainConfig, model_from_mapping

STACK_KNOBS = ("layers_per_stack", "stacks")
SECTIONS = ("model", "train")
# Budgets and plumbing, not hyperparameters: not searched, not in the study fingerprint. Accelerator and
# precision say where and how a trial computes, so one study can use CPU and GPU machines alike.
FIXED_TRAIN_FIELDS = ("max_minutes", "threads", "audio_seconds", "accelerator", "precision")


@dataclass(frozen=True)
class Dimension:
    """One searched value: either `choices`, or a `low`..`high` range (optionally `log`, `step`)."""

    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    when: Any = None  # {"model.conditioning" = "film"}: only searched when those values are in effect

    def __post_init__(self) -> None:
        ranged = self.low is not None or self.high is not None
        if self.choices and ranged:
            raise ConfigError("give either choices = [...] or low/high, not both")
        if not self.choices and not (self.low is not None and self.high is not None):
            raise ConfigError("give choices = [...] or both low and high")
        if self.choices:
            if len(set(map(repr, self.choices))) != len(self.choices):
                raise ConfigError(f"choices {list(self.choices)} has duplicates")
            if any(isinstance(c, (dict, list, tuple)) for c in self.choices):
                raise ConfigError("choices must be plain numbers, strings or booleans")
            if self.log or self.step is not None:
                raise ConfigError("log and step apply to low/high ranges, not choices")
            return
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ConfigError("low and high must be finite numbers")
        if self.high <= self.low:
            raise ConfigError(f"empty or inverted range low = {self.low}, high = {self.high}: high must be > low "
                              "(put a single value in [base] instead)")
        if self.log and self.low <= 0:
            raise ConfigError(f"log = true needs low > 0, got {self.low}")
        if self.step is not None:
            if self.step <= 0 or self.step > self.high - self.low:
                raise ConfigError(f"step {self.step} must be > 0 and at most high - low")
            if self.log:
                raise ConfigError("step cannot be combined with log = true")


@dataclass(frozen=True)
class SearchParam:
    name: str  # "model.channels", "train.learning_rate", "model.layers_per_stack"
    kind: str  # "int", "float" or "categorical"
    dim: Dimension
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # (("model.conditioning", ("film",)),)

    @property
    def section(self) -> str:
        return self.name.partition(".")[0]

    @property
    def key(self) -> str:
        return self.name.partition(".")[2]

    def active(self, effective: Mapping[str, Any]) -> bool:
        return all(effective.get(name) in values for name, values in self.when)

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial for a value of this parameter."""
        d = self.dim
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(d.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(d.low), int(d.high), step=int(d.step or 1), log=d.log)
        return trial.suggest_float(self.name, float(d.low), float(d.high), step=d.step, log=d.log)

    def corner_values(self) -> list[Any]:
        """The values checked at load time: every choice, or both ends of the range."""
        if self.kind == "categorical":
            return list(self.dim.choices)
        if self.kind == "int":
            return [int(self.dim.low), int(self.dim.high)]
        return [float(self.dim.low), float(self.dim.high)]


def stack_shape(dilations: tuple[int, ...]) -> tuple[int, int] | None:
    """(layers_per_stack, stacks) if `dilations` is (1, 2, ..., 2^(L-1)) x S, else None."""
    for layers in range(1, len(dilations) + 1):
        if len(dilations) % layers:
            continue
        stack = tuple(2**i for i in range(layers))
        if dilations == stack * (len(dilations) // layers):
            return layers, len(dilations) // layers
    return None


def effective_values(base: RunConfig) -> dict[str, Any]:
    """Every searchable name with its value in `base` (used for `when` conditions)."""
    values = {f"model.{k}": v for k, v in to_dict(base.model).items()}
    values.update(flatten(to_dict(base.train), "train."))  # groups by their dotted names: train.loss.kind
    shape = stack_shape(base.model.dilations)
    if shape:
        values["model.layers_per_stack"], values["model.stacks"] = shape
    return values


def apply_params(base: RunConfig, values: Mapping[str, Any], run_name: str | None = None) -> RunConfig:
    """`base` with the sampled `values` ({"model.channels": 12, ...}) applied and validated."""
    model = {k.partition(".")[2]: v for k, v in values.items() if k.startswith("model.")}
    train = {k.partition(".")[2]: v for k, v in values.items() if k.startswith("train.")}
    if any(k in model for k in STACK_KNOBS):
        shape = stack_shape(base.model.dilations)
        if shape is None and not all(k in model for k in STACK_KNOBS):
            raise ConfigError(f"base model dilations {list(base.model.dilations)} are not (1..2^(L-1)) x S: "
                              "search both layers_per_stack and stacks, or set a regular pattern in [base.model]")
        layers = int(model.pop("layers_per_stack", shape[0] if shape else 0))
        stacks = int(model.pop("stacks", shape[1] if shape else 0))
        model["dilations"] = tuple(2**i for i in range(layers)) * stacks
    cfg = base
    if model:
        cfg = dataclasses.replace(cfg, model=model_from_mapping(model, base=base.model))
    if train:
        cfg = dataclasses.replace(cfg, train=from_mapping(TrainConfig, merged(to_dict(base.train), unflatten(train)),
                                                          "train"))
    if run_name is not None:
        cfg = dataclasses.replace(cfg, run_name=run_name)
    return cfg


def parse_space(table: Any, base: RunConfig) -> tuple[SearchParam, ...]:
    """Validate the [space] table against `base`; conditional parameters come after their conditions."""
    if table is None:
        return ()
    if not isinstance(table, Mapping):
        raise ConfigError("space: expected tables [space.model] and/or [space.train]")
    params: list[SearchParam] = []
    for section, entries in table.items():
        if section == "data":
            raise ConfigError("space.data: the dataset is simulated once per study and shared by all trials; "
                              "set data options in [base.data] (run one study per dataset)")
        if section not in SECTIONS:
            raise ConfigError(f"space.{section}: unknown section; use [space.model] or [space.train]")
        if not isinstance(entries, Mapping):
            raise ConfigError(f"space.{section}: expected a table of parameters")
        for key, spec in entries.items():
            if _is_group(section, key):  # [space.train.loss]: its keys are searched as train.loss.<key>
                if not isinstance(spec, Mapping):
                    raise ConfigError(f"space.{section}.{key}: a group of settings; give a table "
                                      f"[space.{section}.{key}] of parameters")
                if any(k in spec for k in ("low", "high", "choices")):
                    raise ConfigError(f"space.{section}.{key}: a group of settings, not one; search its settings, "
                                      f"e.g. [space.{section}.{key}] kind = {{ choices = [...] }}")
                params.extend(_parse_param(section, f"{key}.{sub}", subspec) for sub, subspec in spec.items())
            else:
                params.append(_parse_param(section, key, spec))
    names = {p.name for p in params}
    for p in params:
        for cond_name, _ in p.when:
            if cond_name == p.name:
                raise ConfigError(f"space.{p.name}.when: a parameter cannot depend on itself")
            if cond_name not in effective_values(base) and cond_name not in names:
                raise ConfigError(f"space.{p.name}.when: '{cond_name}' is not a searchable setting")
            if any(q.name == cond_name and q.when for q in params):
                raise ConfigError(f"space.{p.name}.when: '{cond_name}' is itself conditional; nest at most one level")
    ordered = tuple(sorted(params, key=lambda p: bool(p.when)))  # stable: file order otherwise
    for p in ordered:
        for value in p.corner_values():
            try:
                apply_params(base, {p.name: value})
            except ConfigError as err:
                raise ConfigError(f"space.{p.name}: value {value!r} is not a valid setting ({err})") from None
    return ordered


def _is_group(section: str, key: str) -> bool:
    """Whether `section.key` is a group of settings (a dataclass such as train.loss), not one setting."""
    if section != "train":
        return False
    return dataclasses.is_dataclass(typing.get_type_hints(TrainConfig).get(key))


def _field_type(section: str, key: str) -> Any:
    if section == "model" and key in (*STACK_KNOBS, *ARRAY_FIELDS):
        return int  # an array field's range searches one later array; choices may be "8,4" strings
    if section == "model" and key in ("dilations", "preset"):
        return str  # patterns such as "(1..256)x2"; preset names (their architecture, [base.model]'s knobs)
    cls = WaveNetConfig if section == "model" else TrainConfig
    *groups, leaf = key.split(".")
    for group in groups:  # train.loss.kind: into the group's dataclass
        cls = typing.get_type_hints(cls).get(group)
        if not dataclasses.is_dataclass(cls):
            raise ConfigError(f"space.{section}.{key}: '{group}' is not a group of {section} settings")
    hints = typing.get_type_hints(cls)
    if leaf not in hints or dataclasses.is_dataclass(hints[leaf]):
        moved = getattr(cls, "MOVED_KEYS", {}).get(leaf)
        if moved:
            raise ConfigError(f"space.{section}.{key}: this setting is now {section}.{moved}; search it in "
                              f"[space.{section}.{moved.rpartition('.')[0]}] as {moved.rpartition('.')[2]}")
        top = WaveNetConfig() if section == "model" else TrainConfig()
        knobs = (*STACK_KNOBS, "preset") if section == "model" else ()
        valid = sorted({*flatten(to_dict(top)), *knobs} - set(FIXED_TRAIN_FIELDS))
        raise ConfigError(f"space.{section}.{key}: unknown setting; searchable {section} settings are: "
                          f"{', '.join(valid)}")
    if section == "train" and key in FIXED_TRAIN_FIELDS:
        raise ConfigError(f"space.train.{key}: not a hyperparameter; set it in [base.train] or [budget]")
    if typing.get_origin(hints[leaf]) in (typing.Union, types.UnionType) and int in typing.get_args(hints[leaf]):
        return int  # batch_size = "auto" | N: a study searches numbers
    return hints[leaf]


def _parse_param(section: str, key: str, spec: Any) -> SearchParam:
    where = f"space.{section}.{key}"
    tp = _field_type(section, key)
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected {{ low = ..., high = ... }} or {{ choices = [...] }}, got {spec!r}")
    try:
        dim = from_mapping(Dimension, spec)
    except ConfigError as err:
        raise ConfigError(f"{where}.{err}" if str(err).split(":")[0] in spec else f"{where}: {err}") from None
    if dim.choices:
        kind = "categorical"
    elif tp is int:
        if any(v is not None and float(v) != int(v) for v in (dim.low, dim.high, dim.step)):
            raise ConfigError(f"{where}: {section}.{key} is an integer setting; low/high/step must be integers")
        kind = "int"
    elif tp is float:
        kind = "float"
    else:
        raise ConfigError(f"{where}: {section}.{key} is not numeric; use choices = [...]")
    return SearchParam(name=f"{section}.{key}", kind=kind, dim=dim, when=_parse_when(where, dim.when, section))


def _parse_when(where: str, when: Any, section: str) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if when is None:
        return ()
    if not isinstance(when, Mapping) or not when:
        raise ConfigError(f"{where}.when: expected a table such as {{ \"model.conditioning\" = \"film\" }}")
    out = []
    for name, value in when.items():
        full = name if "." in name else f"{section}.{name}"
        values = tuple(value) if isinstance(value, list) else (value,)
        out.append((full, values))
    return tuple(out)
