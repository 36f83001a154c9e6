"""Does a model follow the knobs at settings it never saw? The former 6-setting data vs knob designs.

    .venv/bin/python benchmarks/knob_generalisation.py --samples 80e6        # all three arms
    .venv/bin/python benchmarks/knob_generalisation.py --prepare-only        # simulate the datasets (cached)
    .venv/bin/python benchmarks/knob_generalisation.py --samples 80e6 --only dense
    .venv/bin/python benchmarks/knob_generalisation.py --samples 10e6 --set model.conditioning=film_out
    .venv/bin/python benchmarks/knob_generalisation.py --smoke --data-dir DIR   # the tiny study's data, seconds

Trains the same model (the main study's base: FiLM WaveNet3 with knob gain, loss over each
setting's power; `train()` as `ampstudy train` does, tracked in the default MLflow store) for the
same number of training samples (`train.max_samples`: steps x batch x segment, the same compute
on any machine) on three datasets with the same total SPICE audio (360 s at 44.1 kHz):

- six:    the main study's former data: 60 s of one corpus at 3 listed + 3 random settings,
          one of them held out (test-only);
- design: 52 scrambled-Sobol settings x 6 s of their own DI + the 8 knob end points x 6 s;
          the settings fall in train / validation / test groups (datamodules/knob_design.py);
- dense:  the same design drawn denser: 172 settings x 2 s + the 8 end points x 2 s (the first
          52 settings and their groups are the design's: the Sobol sequence is prefix-stable).

Every model is tested (pre-emphasis 0.95) on unseen audio at its own training settings
("seen") and on the 52-setting design's test settings ("unseen": never trained on by any arm;
the 6-setting model's own held-out setting is printed too), as the typical setting's ESR and
pooled, with the ratios unseen / seen and each knob design's unseen ESR / the six-setting
model's, all from the one run. A busy machine slows the run but does not change what it learns;
the table gives each arm's training samples and, for information, its wall seconds.

A run of all three arms without `--set` writes its table to
benchmarks/results/knob_generalisation.md (`--no-write`: print only); `--only` (one arm, no
comparison) and `--set` (a variant) runs print only. `--smoke` trains a tiny model (the tiny
study's base, with the knob gain and per-setting loss) for a few steps per arm on the tiny
study's dataset (studies/tiny.toml's [base.data], in `--data-dir` when given) for every arm,
untracked in temporary folders, simulates nothing and writes nothing: it checks the code path,
not the claim (that dataset has no unseen settings, so its unseen columns are nan).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without install

from benchmarks.results_file import publish  # noqa: E402
from datamodules.config import AudioConfig, DataConfig, KnobsConfig, PotSettings  # noqa: E402
from datamodules.dataset import prepare_dataset  # noqa: E402
from foundation.configs import to_dict  # noqa: E402
from training.devices import placement  # noqa: E402
from training.evaluate import evaluate_model  # noqa: E402
from training.model_io import load_model  # noqa: E402
from training.run_config import RunConfig, run_config_from_mapping  # noqa: E402
from training.train import train  # noqa: E402

SIX = DataConfig(knobs=KnobsConfig(settings=(PotSettings(0.5, 0.5, 0.5, 0.5), PotSettings(0.8, 0.6, 0.4, 0.5),
                                             PotSettings(0.3, 0.8, 0.7, 0.3)), random_settings=3, held_out_settings=1),
                 audio=AudioConfig(corpus_seconds=60.0, region_seconds=2.0))
DESIGN = DataConfig(knobs=KnobsConfig(settings=(), design_settings=52, design_seconds=6.0),
                    audio=AudioConfig(region_seconds=1.0))
DENSE = DataConfig(knobs=KnobsConfig(settings=(), design_settings=172, design_seconds=2.0),
                   audio=AudioConfig(region_seconds=1.0))
ARMS = {"six": SIX, "design": DESIGN, "dense": DENSE}
SMOKE_SAMPLES = 100_000  # per arm in --smoke: a few steps of the tiny study's batches


def config(data: DataConfig, name: str, args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    """The run of one arm: the main study's base model and loss (or, with `base`, that run's model and
    batch shape with the same knob gain and loss), then `--set`."""
    model = {"preset": args.preset} if base is None else to_dict(base.model)
    table = {"experiment": "benchmark-knob-generalisation", "run_name": f"{name}-{args.budget:.3g}samples",
             "data": {}, "model": {**model, "conditioning": "film", "knob_gain": True},
             "train": {"max_epochs": 100000, "early_stopping_patience": 1000, "threads": args.threads,
                       "max_samples": args.budget, "max_minutes": 0.0,
                       "audio_seconds": 3.0, "loss": {"reference": "setting"}}}  # the main study's base
    if base is not None:
        table["train"].update(batch_size=base.train.batch_size, segment_samples=base.train.segment_samples)
    for item in args.set:
        key, _, raw = item.partition("=")
        section, _, leaf = key.partition(".")
        try:
            table[section][leaf] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            table[section][leaf] = raw  # a bare word is a string: model.conditioning=film_out
    cfg = run_config_from_mapping(table)
    return dataclasses.replace(cfg, data=data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=float, default=80e6, help="training samples per model (default 80e6)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preset", default="WaveNet3")
    parser.add_argument("--only", choices=sorted(ARMS), help="train only one of the arms (prints only)")
    parser.add_argument("--set", action="append", default=[],
                        help="override, e.g. train.loss.reference=dataset (prints only)")
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument("--data-dir", help="dataset cache of every arm (default: data/, or the tiny study's "
                                           "with --smoke)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"the tiny study's model and dataset for every arm, {SMOKE_SAMPLES:,} samples per "
                             "arm, 1 thread, untracked; simulates and writes nothing")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/results/ alone")
    args = parser.parse_args(argv)
    args.argv = argv  # for the results file's header
    if not args.samples >= 1:
        parser.error("--samples must be a positive number of training samples")
    threads = torch.get_num_threads()
    try:
        return compare(args)
    finally:
        torch.set_num_threads(threads)  # train() sets them; main() may run inside another process (the tests)


def compare(args: argparse.Namespace) -> int:
    base = None
    if args.smoke:
        from studies.spec import load_study_spec

        base = load_study_spec(REPO / "studies" / "tiny.toml").base
        tiny = base.data if not args.data_dir else dataclasses.replace(base.data, data_dir=args.data_dir)
        arms, reference = {name: tiny for name in ARMS}, tiny
        args.budget, args.threads = SMOKE_SAMPLES, 1
    else:
        def located(data: DataConfig) -> DataConfig:
            return dataclasses.replace(data, data_dir=args.data_dir) if args.data_dir else data

        arms, reference = {name: located(data) for name, data in ARMS.items()}, located(DESIGN)
        args.budget = int(args.samples)
    for name, data in arms.items():
        started = time.perf_counter()
        path = prepare_dataset(data, progress=not args.smoke)
        manifest = json.loads((path / "manifest.json").read_text())
        audio = sum(manifest["inputs"][s["input"]]["seconds"] for s in manifest["settings"])
        print(f"{name}: {path.name}, {len(manifest['settings'])} settings, {audio:.0f} s of SPICE audio, "
              f"ready in {time.perf_counter() - started:.0f} s")
    if args.prepare_only:
        return 0
    rows = {}
    with tempfile.TemporaryDirectory(prefix="ampstudy-knobs-") as work:
        for name, data in arms.items():
            if args.only and name != args.only:
                continue
            print(f"training: {name} for {args.budget:,} training samples ...", flush=True)
            cfg = config(data, name, args, base)
            if args.smoke:  # untracked, in a temporary folder (the store named keeps train() from making mlruns/)
                result = train(cfg, evaluate_test=True, track=False, progress=False,
                               work_dir=Path(work) / name, tracking_uri=f"sqlite:///{work}/mlflow.db")
            else:
                result = train(cfg, evaluate_test=True)
            unseen = evaluate_model(load_model(result.model_dir).net, reference, "test", progress=False)
            rows[name] = (cfg, result, result.test_metrics, unseen)
    text = table(rows, args)
    publish("knob_generalisation", text, write=not (args.smoke or args.no_write or args.only or args.set), argv=args.argv)
    return 0


def table(rows: dict, args: argparse.Namespace) -> str:
    """The Markdown table of the arms that ran and their ratios."""
    cfg = next(iter(rows.values()))[0]
    smoke = ("SMOKE RUN: every arm trains on the tiny study's dataset (2 settings, none unseen: the unseen columns "
             "are nan); it checks the code path, not the claim. " if args.smoke else "")
    model = f"Model: the tiny study's ({cfg.model.channels} channels)" if args.smoke else f"Model: {args.preset}"
    variant = f", overrides: {', '.join(args.set)}" if args.set else ""
    where = placement(cfg.train)  # the batch shape train() resolves "auto" to
    lines = [f"{smoke}{model}, FiLM with knob gain, loss over each setting's power{variant}; batch "
             f"{where.batch_size} x {where.segment_samples} samples on {where.accelerator}, {cfg.train.threads} "
             "thread(s). Budget: "
             f"{args.budget:,} training samples per arm (wall s: for information only). Test ESR, pre-emphasis 0.95.",
             "", "| data | epochs | samples | wall s | val | seen | unseen | unseen / seen | worst unseen | pooled seen "
             "| pooled unseen | own held-out |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, (_, result, own, unseen) in rows.items():
        seen, design_unseen = own["esr_geomean_seen_settings"], unseen["esr_geomean_unseen_settings"]
        held = own["esr_geomean_unseen_settings"] if name == "six" else math.nan
        lines.append(f"| {name} | {result.epochs} | {result.samples:,} | {result.wall_seconds:.0f} | "
                     f"{result.val_esr_tail_aware:.4f} | {seen:.4f} | "
                     f"{design_unseen:.4f} | {design_unseen / seen:.2f} | {unseen['esr_worst_unseen_setting']:.4f} | "
                     f"{own['esr_pooled_seen_settings']:.4f} | {unseen['esr_pooled_unseen_settings']:.4f} | "
                     f"{held:.4f} |")
    lines.append("")
    if "six" in rows:
        six = rows["six"][3]["esr_geomean_unseen_settings"]
        for name in ("design", "dense"):
            if name in rows:
                ratio = rows[name][3]["esr_geomean_unseen_settings"] / six
                lines.append(f"- {name} / six, unseen ESR: {ratio:.2f}x")
    lines += ["", "seen / unseen: geometric means of the settings' ESRs (averaged in dB); val: tail-aware; pooled: "
              "all settings' audio as one signal, i.e. mostly the loudest setting. val = each model's own validation "
              "ESR (design arms: their validation settings; six: held-back audio); unseen = the 52-setting design's "
              "test settings (16 incl. every knob's end points), never trained on by any arm; seen = held-back "
              "audio at each model's own training settings; own held-out = the six-setting data's held-out setting."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
