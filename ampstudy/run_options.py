"""The run config a command line asks for: --config, --set, --preset and the shorthand options.

Everything ends in a validated `RunConfig` or one `ConfigError` line that names the fix.
"""

from __future__ import annotations

import argparse

from foundation.errors import ConfigError
from foundation.knobs import KNOB_NAMES

UNLIMITED_EPOCHS = 1_000_000  # `--samples` / `--minutes`: that budget, not an epoch count, ends training


def check_top_level_key(item: str, key: str) -> None:
    """`--set learning_rate=3` names a train setting without its section: say which section."""
    import dataclasses

    from training.run_config import RunConfig

    sections = {f.name: f.default_factory for f in dataclasses.fields(RunConfig) if f.default_factory is not dataclasses.MISSING}
    if key not in sections and key in {f.name for f in dataclasses.fields(RunConfig)}:
        return
    owners = [name for name, kind in sections.items() if key in {f.name for f in dataclasses.fields(kind)}]
    where = (f"'{key}' is a section, give one of its keys" if key in sections else
             f"'{key}' is a setting of [{owners[0]}]: write --set {owners[0]}.{item}" if owners else f"unknown '{key}'")
    raise ConfigError(f"--set {item}: {where} (SECTION.KEY=VALUE; the top-level keys are run_name and experiment)")


def run_config_from_args(args: argparse.Namespace):
    """RunConfig from --config, --preset and the shorthand options, validated with clear errors."""
    import tomllib

    from foundation.configs import load_toml
    from training.run_config import run_config_from_mapping

    table = load_toml(args.config) if args.config else {}
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. train.learning_rate=0.002 or run_name=my-run")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # bare words are strings: --set model.activation=tanh
        *sections, leaf = key.split(".")
        if not sections:
            check_top_level_key(item, leaf)
        node = table
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
    data = table.setdefault("data", {})
    if args.seconds is not None:
        data["corpus_seconds"] = args.seconds
    if args.pots:
        data["settings"] = [parse_pots(text) for text in args.pots]
    if args.random_settings is not None:
        data["random_settings"] = args.random_settings
    if args.design is not None:
        data["design_settings"] = args.design
        data.setdefault("settings", [])  # the design replaces the default listed setting unless --pots gives some
    if args.design_seconds is not None:
        data["design_seconds"] = args.design_seconds
    if args.data_dir:
        data["data_dir"] = args.data_dir
    if args.workers is not None:
        data["workers"] = args.workers
    if getattr(args, "preset", None):
        table.setdefault("model", {})["preset"] = args.preset
    train = table.setdefault("train", {})
    budget = {"max_samples": int(args.samples)} if getattr(args, "samples", None) is not None else \
        {"max_minutes": args.minutes} if getattr(args, "minutes", None) is not None else {}
    if budget:
        # A budget, not a cap: lift the epoch limit and early stopping unless the command line sets them.
        train.update(budget)
        train["max_epochs"] = UNLIMITED_EPOCHS
        if not any(item.startswith("train.early_stopping_patience=") for item in args.set):
            train["early_stopping_patience"] = 0
    for option in ("max_minutes", "max_epochs", "threads"):
        if getattr(args, option, None) is not None:
            train[option] = getattr(args, option)
    try:
        return run_config_from_mapping(table)
    except ConfigError as err:
        raise ConfigError(f"{args.config or 'command line'}: {err}") from None


def parse_pots(text: str) -> dict[str, float]:
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4:
        raise ConfigError(f"--pots {text}: expected four numbers volume,treble,bass,middle, e.g. 0.8,0.5,0.5,0.5")
    return dict(zip(KNOB_NAMES, values))
