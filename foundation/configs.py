"""Typed loading of frozen config dataclasses from plain mappings (TOML, JSON, checkpoints).

Every config in ampstudy is a frozen dataclass whose field defaults are the single source of
defaults. `from_mapping` rejects unknown keys (suggesting the closest valid one), converts lists to
tuples and ints to floats where the field says so, and raises `ConfigError` naming the dotted path
of any bad field. Range checks live in each dataclass's `__post_init__` and call `require`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from foundation.errors import ConfigError

T = TypeVar("T")


def require(condition: bool, where: str, message: str) -> None:
    """Raise ConfigError('where: message') unless condition holds; used in __post_init__ checks."""
    if not condition:
        raise ConfigError(f"{where}: {message}")


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, where: str = "") -> T:
    """Build dataclass `cls` from `data`, validating keys and types; `where` prefixes error paths."""
    data = {} if data is None else data
    prefix = f"{where}." if where else ""
    if not isinstance(data, Mapping):
        scalar_key = getattr(cls, "SCALAR_KEY", None)  # a group that was a single value in an older schema
        if scalar_key and where and isinstance(data, (str, int, float)):
            raise ConfigError(f"{where}: is now a table; write {where}.{scalar_key} = {data!r} "
                              f"(a [{where}] table with {scalar_key} = {data!r})")
        raise ConfigError(f"{where or cls.__name__}: expected a table of settings, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        moved = getattr(cls, "MOVED_KEYS", {}).get(key)  # a key of an older schema: say where it went
        if moved:
            raise ConfigError(f"{prefix}{key}: this setting is now {prefix}{moved}; move it there")
        close = difflib.get_close_matches(key, list(fields), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(
            f"{prefix}{key}: unknown setting{hint}; valid settings are: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    values = {name: _convert(hints[name], data[name], f"{prefix}{name}") for name in data}
    try:
        return cls(**values)
    except (ConfigError, ValueError) as err:  # ValueError: torch-free configs (ampmodel) raise it
        message = str(err)
        if where and not message.startswith(prefix):
            message = f"{prefix}{message}"
        raise ConfigError(message) from None


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict (tuples become lists) suitable for JSON/TOML and MLflow params."""
    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value

    return plain(config)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; used to log nested configs as MLflow params."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def unflatten(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """{'a.b': 1} -> {'a': {'b': 1}}: flatten's inverse."""
    out: dict[str, Any] = {}
    for name, value in mapping.items():
        *groups, leaf = name.split(".")
        node = out
        for group in groups:
            node = node.setdefault(group, {})
        node[leaf] = value
    return out


def merged(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `update` laid over it, nested tables merged key by key (not replaced whole)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, turning a missing file or syntax error into a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); TOML files must be UTF-8, "
                          f"e.g. iconv -f latin1 -t utf-8 {path.name} > fixed.toml") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _expected(tp: Any) -> str:
    """How an error names a value of type `tp`: 'an integer', "'auto'", ..."""
    if typing.get_origin(tp) is Literal:
        return " or ".join(map(repr, typing.get_args(tp)))
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return names.get(tp) or ("a table" if dataclasses.is_dataclass(tp) else _type_name(tp))


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, where)
            except ConfigError as err:
                errors.append(str(err))
        if len(errors) == 1:
            raise ConfigError(errors[0])
        raise ConfigError(f"{where}: expected {' or '.join(map(_expected, options))}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_mapping(tp, value, where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):  # TOML and --set accept nan/inf; no setting means anything by them
            raise ConfigError(f"{where}: {value!r} is not a finite number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{where}: unsupported config type {_type_name(tp)}")
