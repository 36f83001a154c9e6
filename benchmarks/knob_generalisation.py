"""Does a model follow the knobs at settings it never saw? The former 6-setting data vs knob designs.

    python benchmarks/knob_generalisation.py --cpu-minutes 60 --threads 1 --only six     # run two at once,
    python benchmarks/knob_generalisation.py --cpu-minutes 60 --threads 1 --only dense   # one core each
    python benchmarks/knob_generalisation.py --prepare-only        # simulate the datasets (cached)
    python benchmarks/knob_generalisation.py --cpu-minutes 5 --only design --set model.conditioning=film_out

Trains the same model (the main study's base: FiLM WaveNet3 with knob gain, loss over each
setting's power; `train()` as `ampstudy train` does) for the same
CPU budget on three datasets with the same total SPICE audio (360 s at 44.1 kHz):

- six:    the main study's former data: 60 s of one corpus at 3 listed + 3 random settings,
          one of them held out (test-only);
- design: 52 scrambled-Sobol settings x 6 s of their own DI + the 8 knob end points x 6 s;
          the settings fall in train / validation / test groups (datamodules/knob_design.py);
- dense:  the same design drawn denser: 172 settings x 2 s + the 8 end points x 2 s (the first
          52 settings and their groups are the design's: the Sobol sequence is prefix-stable).

Every model is tested (pre-emphasis 0.95) on unseen audio at its own training settings
("seen") and on the 52-setting design's test settings ("unseen": never trained on by any arm;
the 6-setting model's own held-out setting is printed too), as the typical setting's ESR and
pooled. The CPU budget counts process CPU seconds (all threads), so a busy machine slows the run
but does not change what it learns.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import resource
import sys
import time
import tomllib
from pathlib import Path

import lightning.pytorch as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from datamodules.config import DataConfig, PotSettings  # noqa: E402
from datamodules.dataset import prepare_dataset  # noqa: E402
from training.evaluate import evaluate_model  # noqa: E402
from training.model_io import load_model  # noqa: E402
from training.run_config import run_config_from_mapping  # noqa: E402
from training.train import train  # noqa: E402

SIX = DataConfig(corpus_seconds=60.0, settings=(PotSettings(0.5, 0.5, 0.5, 0.5), PotSettings(0.8, 0.6, 0.4, 0.5),
                                                PotSettings(0.3, 0.8, 0.7, 0.3)),
                 random_settings=3, held_out_settings=1, region_seconds=2.0)
DESIGN = DataConfig(settings=(), design_settings=52, design_seconds=6.0, region_seconds=1.0)
DENSE = DataConfig(settings=(), design_settings=172, design_seconds=2.0, region_seconds=1.0)
ARMS = {"six": SIX, "design": DESIGN, "dense": DENSE}


def process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuBudget(pl.Callback):
    """Stops training once this process has used `minutes` of CPU time (all threads) since fit start."""

    def __init__(self, minutes: float) -> None:
        self.limit = minutes * 60
        self.start = 0.0

    def on_fit_start(self, trainer, module) -> None:
        self.start = process_cpu_seconds()

    def on_train_batch_end(self, trainer, module, *args) -> None:
        if process_cpu_seconds() - self.start > self.limit:
            trainer.should_stop = True


def config(data: DataConfig, name: str, args: argparse.Namespace):
    table = {"experiment": "benchmark-knob-generalisation", "run_name": f"{name}-{args.cpu_minutes:g}cpumin",
             "data": {}, "model": {"preset": args.preset, "conditioning": "film", "knob_gain": True},
             "train": {"max_epochs": 100000, "early_stopping_patience": 1000, "threads": args.threads,
                       "audio_seconds": 3.0, "loss_reference": "setting"}}  # the main study's base
    for item in args.set:
        key, _, raw = item.partition("=")
        section, _, leaf = key.partition(".")
        try:
            table[section][leaf] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            table[section][leaf] = raw  # a bare word is a string: model.conditioning=film_out
    cfg = run_config_from_mapping(table)
    return dataclasses.replace(cfg, data=data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-minutes", type=float, default=60.0, help="CPU budget per model (all threads)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preset", default="WaveNet3")
    parser.add_argument("--only", choices=sorted(ARMS), help="train only one of the arms")
    parser.add_argument("--set", action="append", default=[], help="override, e.g. train.loss_reference=dataset")
    parser.add_argument("--prepare-only", action="store_true")
    args = parser.parse_args()
    for data in ARMS.values():
        started = time.perf_counter()
        path = prepare_dataset(data)
        manifest = json.loads((path / "manifest.json").read_text())
        audio = sum(manifest["inputs"][s["input"]]["seconds"] for s in manifest["settings"])
        print(f"{path.name}: {len(manifest['settings'])} settings, {audio:.0f} s of SPICE audio, "
              f"ready in {time.perf_counter() - started:.0f} s")
    if args.prepare_only:
        return
    rows = {}
    for name, data in ARMS.items():
        if args.only and name != args.only:
            continue
        result = train(config(data, name, args), evaluate_test=True, callbacks=[CpuBudget(args.cpu_minutes)])
        own = result.test_metrics
        unseen = evaluate_model(load_model(result.model_dir).net, DESIGN, "test", progress=False)
        rows[name] = (result, own, unseen)
    print(f"\n{args.preset} (FiLM, knob gain unless --set), {args.cpu_minutes:g} CPU minutes each ({args.threads} threads); "
          "test ESR, pre-emphasis 0.95")
    print(f"{'data':8} {'epochs':>7} {'val':>8} {'seen':>8} {'unseen':>8} {'ratio':>6} {'worst unseen':>13} "
          f"{'pooled seen':>12} {'pooled unseen':>14} {'own held-out':>13}")
    for name, (result, own, unseen) in rows.items():
        seen, design_unseen = own["esr_geomean_seen_settings"], unseen["esr_geomean_unseen_settings"]
        held = own["esr_geomean_unseen_settings"] if name == "six" else math.nan
        print(f"{name:8} {result.epochs:>7} {result.val_esr_tail_aware:>8.4f} {seen:>8.4f} {design_unseen:>8.4f} "
              f"{design_unseen / seen:>6.2f} {unseen['esr_worst_unseen_setting']:>13.4f} "
              f"{own['esr_pooled_seen_settings']:>12.4f} {unseen['esr_pooled_unseen_settings']:>14.4f} {held:>13.4f}")
    print("seen / unseen: geometric means of the settings' ESRs (averaged in dB); val: tail-aware; pooled: all "
          "settings' audio as one signal, i.e. mostly the loudest setting. val = each model's own validation "
          "ESR (design arms: their validation settings; six: held-back audio); unseen = the 52-setting design's "
          "test settings (16 incl. every knob's end points), never trained on by any arm; seen = held-back "
          "audio at each model's own training settings.")


if __name__ == "__main__":
    main()
