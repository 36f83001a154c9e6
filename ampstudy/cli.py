"""`ampstudy`: make SPICE data, train WaveNets, run Optuna studies, promote and render models.

Every subcommand has `--help` with examples. User mistakes end with one line naming the fix
(exit code 2), never a traceback; set AMPSTUDY_DEBUG=1 to see tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
import warnings

from ampmodel.config import NAM_FILE_FORMATS
from ampstudy.options import OneLineParser, number
from foundation.errors import AmpStudyError, ConfigError, StopRequested
from foundation.knobs import KNOB_NAMES

UNLIMITED_EPOCHS = 1_000_000  # `--samples` / `--minutes`: that budget, not an epoch count, ends training

EXAMPLES = """\
typical session:
  ampstudy data --seconds 30                       # simulate the Bassman in ngspice, cache the dataset
  ampstudy train --preset WaveNet3 --minutes 20     # one run for 20 minutes, tracked in mlruns/ (MLflow)
  ampstudy study run studies/bassman_wavenet.toml  # Optuna search over WaveNet variants
  ampstudy study report studies/bassman_wavenet.toml
  ampstudy promote studies/bassman_wavenet.toml    # test the best trial, register it, alias 'champion'
  ampstudy riff riff.wav --sample-rate 44100             # a guitar DI to listen with
  ampstudy render models:/bassman-wavenet@champion riff.wav amp.wav --volume 0.8 --treble 0.5 --bass 0.5 --middle 0.5
  mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db   # browse runs, listen to audio
"""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help (0) or a bad option (2, one line already printed)
        return int(done.code or 0)
    _quiet_library_chatter()
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except StopRequested as stop:
        print(f"ampstudy: {stop}", file=sys.stderr)
        return 128 + stop.signum
    except AmpStudyError as err:
        if os.environ.get("AMPSTUDY_DEBUG"):
            raise
        print(f"ampstudy: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ampstudy: interrupted; everything logged so far is kept", file=sys.stderr)
        return 130


def _quiet_library_chatter() -> None:
    """Advice meant for library developers (MLflow's deprecation notes, Optuna's small-sample notes)
    buries our own output; set AMPSTUDY_DEBUG=1 to see it."""
    if os.environ.get("AMPSTUDY_DEBUG"):
        return
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(mlflow|optuna)(\.|$)")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"mlflow(\.|$)")
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per tiny download


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="ampstudy", description=__doc__.split("\n")[0], epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_data(commands)
    _add_train(commands)
    _add_render(commands)
    _add_export(commands)
    _add_riff(commands)
    from ampstudy.study_commands import add_commands

    add_commands(commands)
    return parser


def _config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="run config TOML ([data], [model], [train] tables)")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                        help="override one setting, e.g. --set train.learning_rate=0.002 --set data.seed=3 "
                             "--set run_name=my-run --set experiment=bassman (values are TOML: numbers, "
                             "true/false, \"strings\", [lists]; a bare word is a string)")
    parser.add_argument("--seconds", type=number(low=0, above=True, unit="seconds"),
                        help="seconds of synthetic guitar/bass DI per knob setting")
    parser.add_argument("--pots", metavar="V,T,B,M", action="append",
                        help="a knob setting volume,treble,bass,middle in 0..1; repeat for several")
    parser.add_argument("--random-settings", type=number(int, low=0), help="add N seeded random knob settings")
    parser.add_argument("--design", type=number(int, low=1, high=4096), metavar="N",
                        help="a knob design instead of listed settings: N space-filling settings with their own DI, "
                             "split into train/validation/test groups (see studies/README.md)")
    parser.add_argument("--design-seconds", type=number(low=0, above=True, unit="seconds"),
                        help="seconds of DI per design setting (default 6)")
    parser.add_argument("--data-dir", help="dataset cache directory (default: data)")
    parser.add_argument("--workers", type=number(int, low=1), help="parallel ngspice processes (default: all cores)")


# --- the run config a command line asks for: --config, --set, --preset and the shorthand options;
# everything ends in a validated RunConfig or one ConfigError line that names the fix ---


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


def with_set_items(table: dict, items: list[str], option: str = "--set") -> dict:
    """`table` with each KEY=VALUE of `items` merged in (values are TOML; bare words are strings);
    a malformed item is one ConfigError line naming `option`. The one parser of --set items (the
    peer race's --ours-set uses it too)."""
    import tomllib

    from foundation.configs import merged, unflatten

    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} {item}: expected KEY=VALUE, e.g. train.learning_rate=0.002 or run_name=my-run")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # bare words are strings: --set model.activation=tanh
        if "." not in key:
            check_top_level_key(item, key)
        table = merged(table, unflatten({key: value}))
    return table


def run_config_from_args(args: argparse.Namespace):
    """RunConfig from --config, --preset and the shorthand options, validated with clear errors."""
    from foundation.configs import load_toml
    from training.run_config import run_config_from_mapping

    table = with_set_items(load_toml(args.config) if args.config else {}, args.set)
    data = table.setdefault("data", {})
    knobs, audio = data.setdefault("knobs", {}), data.setdefault("audio", {})
    if args.seconds is not None:
        audio["corpus_seconds"] = args.seconds
    if args.pots:
        knobs["settings"] = [parse_pots(text) for text in args.pots]
    if args.random_settings is not None:
        knobs["random_settings"] = args.random_settings
    if args.design is not None:
        knobs["design_settings"] = args.design
        knobs.setdefault("settings", [])  # the design replaces the default listed setting unless --pots gives some
    if args.design_seconds is not None:
        knobs["design_seconds"] = args.design_seconds
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


def _add_data(commands) -> None:
    parser = commands.add_parser(
        "data", help="simulate the Bassman 5F6-A in ngspice and cache the dataset",
        description="Generate guitar/bass-like DI input, run it through the SPICE Bassman preamp at each "
                    "knob setting (parallel ngspice processes), and cache input/targets/manifest under the "
                    "data directory, keyed by a content hash: a second call with the same settings is instant.",
        epilog="examples:\n  ampstudy data --seconds 20 --pots 0.8,0.5,0.5,0.5 --pots 0.3,1,0.2,0.5\n"
               "  ampstudy data --design 192 --design-seconds 2   # the knob study's data\n"
               "  ampstudy data --dataset data/3a718adcd625e0bd8e6a9ecd   # check one, rebuild it if damaged\n\n"
               "Every file of a dataset is checked against the size and sha256 in its manifest; a damaged dataset\n"
               "is rebuilt from the chunk cache (data/chunks: ngspice runs only for chunks not found there).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _config_options(parser)
    parser.add_argument("--dataset", metavar="DIR",
                        help="check (and if damaged rebuild) the dataset in DIR with the settings in its manifest, "
                             "instead of the one the other options describe")
    parser.set_defaults(handler=_cmd_data)


def _cmd_data(args: argparse.Namespace) -> int:
    from datamodules.dataset import config_of_dataset, prepare_dataset

    data = config_of_dataset(args.dataset) if args.dataset else run_config_from_args(args).data
    started = time.perf_counter()
    directory = prepare_dataset(data, progress=True, repair=True)
    print(f"dataset: {directory}  ({time.perf_counter() - started:.1f} s)")
    return 0


def _add_train(commands) -> None:
    from ampmodel.config import PRESETS

    parser = commands.add_parser(
        "train", help="train one WaveNet on the SPICE dataset, tracked in MLflow",
        description="Train one model (the same train(cfg) every study trial calls): prepares the dataset if "
                    "needed, fits with ESR loss, early stopping and a best checkpoint, logs params, cost, "
                    "audio and plots to MLflow, evaluates the held-out test split and prints the run id.",
        epilog="examples:\n  ampstudy train --preset WaveNet3 --samples 300e6 --threads 2   # the same model on any machine\n"
               "  ampstudy train --preset WaveNet3 --minutes 20 --threads 2    # as far as 20 minutes get here\n"
               "  ampstudy train --config my_run.toml --set model.channels=12\n\n"
               "--samples counts training samples (optimiser steps x batch_size x segment_samples): two runs\n"
               "with equal --samples had equal compute, whatever the machine or its load; --minutes does not.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _config_options(parser)
    parser.add_argument("--preset", choices=sorted(PRESETS), help="start from a paper architecture")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--samples", type=number(low=1, high=1e15, unit="training samples"),
                        help="train on this many training samples (e.g. 300e6): no epoch limit and no early "
                             "stopping, unless you also give --max-epochs or --set train.early_stopping_patience=N; "
                             "the best validation checkpoint is kept. Comparable across machines")
    budget.add_argument("--minutes", type=number(low=0, above=True, high=10080, unit="minutes"),
                        help="train for this long (wall clock): no epoch limit and no early stopping, unless you "
                             "also give --max-epochs or --set train.early_stopping_patience=N; the best validation "
                             "checkpoint is kept")
    budget.add_argument("--max-minutes", type=number(low=0, unit="minutes"),
                        help="at most this long; early stopping and max_epochs may end training sooner")
    parser.add_argument("--max-epochs", type=number(int, low=1), help="epoch limit")
    parser.add_argument("--threads", type=number(int, low=1, high=1024),
                        help="torch CPU threads (default: torch's choice, usually one per core)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///mlruns/mlflow.db)")
    parser.set_defaults(handler=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from training import run_info, tracking
    from training.train import train

    cfg = run_config_from_args(args)
    result = train(cfg, tracking_uri=args.tracking_uri, evaluate_test=True)
    print(f"trained {result.epochs} epochs ({result.steps} steps, {result.samples:,} training samples) in "
          f"{result.wall_seconds:.0f} s on {result.device}, stopped by {result.stopped_by}")
    print(f"validation ESR: {run_info.esr_text(result.val_metrics)}")
    has_test = result.test_esr_tail_aware is not None and math.isfinite(result.test_esr_tail_aware)
    print(f"test ESR:       {run_info.esr_text(result.test_metrics) if has_test else 'n/a (data.audio.region_split gives the test split no audio)'}")
    print(f"params: {result.cost.get('params')}  MACs/sample: {result.cost.get('macs_per_sample'):.0f}  "
          f"real-time factor: {result.cost.get('rtf', float('nan')):.1f}x  model: {result.model_dir}")
    if result.run_id:
        uri = args.tracking_uri or tracking.default_tracking_uri()
        experiment = tracking.client(uri).get_run(result.run_id).info.experiment_id
        print(f"run {result.run_id}: {tracking.run_link(experiment, result.run_id, uri)}")
        if tracking.ui_command(uri):
            print(f"  (serve the UI first: {tracking.ui_command(uri)})")
    return 0


def _add_render(commands) -> None:
    parser = commands.add_parser(
        "render", help="run a trained model over a wav file (streaming, block by block)",
        description="MODEL is a model directory, runs:/<run_id>/model, or models:/<name>@<alias>. The input "
                    "must be a mono wav at the model's sample rate; full scale means the same input volts as "
                    "in training. Knob options are required for a conditioned model.",
        epilog="example: ampstudy render models:/bassman-wavenet@champion di.wav amp.wav --volume 0.8 --treble 0.6",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("input_wav")
    parser.add_argument("output_wav")
    _add_knob_options(parser)
    parser.add_argument("--block-seconds", type=number(low=0, above=True, high=60, unit="seconds"), default=0.1,
                        help="streaming block length (default 0.1)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                        help="where the model runs (default cpu: short streamed blocks are faster on a CPU core; "
                             "cuda can win for long --block-seconds and large models; auto = cuda when present)")
    parser.add_argument("--threads", type=number(int, low=0, high=1024), default=1,
                        help="torch CPU threads (default 1: streaming is latency-bound, and on a busy machine "
                             "more threads ran many times slower; 0 = torch's choice)")
    parser.set_defaults(handler=_cmd_render)


def _add_knob_options(parser: argparse.ArgumentParser) -> None:
    """--volume/--treble/--bass/--middle and --allow-untrained-knobs, as render and export take them."""
    for knob in KNOB_NAMES:
        parser.add_argument(f"--{knob}", type=float, help=f"{knob} knob position 0..1")
    parser.add_argument("--allow-untrained-knobs", action="store_true",
                        help="go on at a knob setting the model was not trained at (a model trained at a few listed "
                             "settings knows only those: elsewhere its output is an extrapolation; without this "
                             "flag such a setting is refused)")


def _cmd_render(args: argparse.Namespace) -> int:
    from training.render import render_file

    knobs = {k: getattr(args, k) for k in KNOB_NAMES}
    seconds, wall = render_file(args.model, args.input_wav, args.output_wav, knobs, args.block_seconds, args.device,
                                args.threads, args.allow_untrained_knobs)
    print(f"wrote {args.output_wav}: {seconds:.2f} s of audio in {wall:.2f} s ({seconds / max(wall, 1e-9):.1f}x real time)")
    return 0


def _add_riff(commands) -> None:
    parser = commands.add_parser(
        "riff", help="write a synthetic guitar riff (a DI wav) to play through a model",
        description="Guitar lines, strums and palm mutes from the same generator as the training corpus (a "
                    "seed it never used by default), peaking at -6 dBFS: a DI to hear a model with `ampstudy "
                    "render`. Write it at the model's sample rate.",
        epilog="example: ampstudy riff riff.wav --seconds 8 --sample-rate 16000 && ampstudy render "
               "models:/bassman-wavenet@champion riff.wav amp.wav --volume 0.8 --treble 0.6 --bass 0.5 --middle 0.5",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_wav")
    parser.add_argument("--seconds", type=number(low=0, above=True, high=3600, unit="seconds"), default=8.0,
                        help="length (default 8)")
    parser.add_argument("--sample-rate", type=number(int, low=8000, high=384000, unit="Hz"), default=44100,
                        help="samples per second (default 44100): the model's rate")
    parser.add_argument("--seed", type=number(int, low=0), default=1000, help="which riff (default 1000)")
    parser.set_defaults(handler=_cmd_riff)


def _cmd_riff(args: argparse.Namespace) -> int:
    from datamodules.audio_io import save_wav
    from datamodules.corpus import synth_riff

    save_wav(args.output_wav, synth_riff(args.seconds, args.sample_rate, args.seed), args.sample_rate)
    print(f"wrote {args.output_wav}: {args.seconds:g} s of DI at {args.sample_rate} Hz")
    return 0


def _add_export(commands) -> None:
    parser = commands.add_parser(
        "export", help="write a NAM-family model at one knob setting as a .nam file for NAM's plugin",
        description="MODEL is a model directory, runs:/<run_id>/model, or models:/<name>@<alias>; it must be a "
                    "NAM-family WaveNet (model.family = \"nam\", e.g. preset nam-standard). The knob setting is "
                    "folded into fixed weights, so the file plays that setting in Neural Amp Modeler; export one "
                    "file per setting you want. Knob options are required for a conditioned model.",
        epilog="example: ampstudy export models:/bassman-wavenet@champion bassman.nam --volume 0.8 --treble 0.6 "
               "--bass 0.5 --middle 0.5",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("output", help="the .nam file to write")
    _add_knob_options(parser)
    parser.add_argument("--name", help="the model's name in NAM (default: the output file's name)")
    parser.add_argument("--nam-format", choices=tuple(NAM_FILE_FORMATS), default=next(iter(NAM_FILE_FORMATS)),
                        help="the .nam file format: 0.7 (default) is what neural-amp-modeler 0.13 writes, played by "
                             "NAM plugins built on NeuralAmpModelerCore 0.4.1 or later; 0.5 plays in older plugins "
                             "too (the same model and weights, an older layout)")
    parser.set_defaults(handler=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from training.nam_export import export_nam

    done = export_nam(args.model, args.output, {k: getattr(args, k) for k in KNOB_NAMES}, name=args.name,
                      allow_untrained_knobs=args.allow_untrained_knobs, nam_format=args.nam_format)
    setting = ", ".join(f"{k} {v:g}" for k, v in done.knobs.items()) or "the knobs it was trained at"
    esr = f", test ESR {done.test_esr:.4g}" if done.test_esr is not None else ""
    print(f"wrote {done.path}: '{done.name}' at {setting} ({done.weights} weights{esr}, .nam format "
          f"{args.nam_format}); load it in NAM's plugin")
    return 0


if __name__ == "__main__":
    sys.exit(main())

