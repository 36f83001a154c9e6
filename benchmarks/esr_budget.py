"""Validation and test ESR of the paper's WaveNets after an equal training-sample budget on the default dataset.

    .venv/bin/python benchmarks/esr_budget.py --samples 30e6 --presets WaveNet1 WaveNet2 WaveNet3
    .venv/bin/python benchmarks/esr_budget.py --smoke --data-dir DIR   # studies/tiny.toml's data, seconds

Each preset trains with `train(cfg)` (the same code as `ampstudy train`, untracked) for the same
number of training samples (`train.max_samples`: steps x batch_size x segment_samples, equal on any
machine and under any load), without early stopping or a time limit, on the default dataset
(`--seconds` of corpus per knob setting). Printed side by side and written to
benchmarks/results/esr_budget.md: per preset the parameters, training samples and steps, the
tail-aware validation and test ESR (pre-emphasis 0.95) and their ratio to the first preset's,
epochs, streaming real-time factor, and the wall seconds the run took (information only: the
presets are compared at equal compute, not equal time). `--smoke` trains each preset for a few
thousand samples on studies/tiny.toml's dataset (`--data-dir`: where it is cached) and writes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without install

SMOKE_SAMPLES = 8_192  # two steps of the tiny study's 4 x 1024 batches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=float, default=30e6, help="training samples per preset (default 30e6)")
    parser.add_argument("--seconds", type=float, default=60.0, help="corpus seconds (default dataset: 60)")
    parser.add_argument("--presets", nargs="+", default=["WaveNet1", "WaveNet2", "WaveNet3"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run")
    parser.add_argument("--data-dir", help="dataset cache (default: data/; with --smoke, where the tiny dataset is)")
    parser.add_argument("--smoke", action="store_true",
                        help="studies/tiny.toml's dataset and batches, a few thousand samples, 1 thread, "
                             "nothing written")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/results/ alone")
    args = parser.parse_args(argv)
    from studies.spec import load_study_spec
    from training.run_config import model_from_mapping, run_config_from_mapping
    from training.train import SAMPLE_BUDGET, train

    if args.smoke:
        tiny = load_study_spec(REPO / "studies" / "tiny.toml").base
        data, base_train, threads, samples = tiny.data, tiny.train, 1, SMOKE_SAMPLES
        where = f"studies/tiny.toml's dataset ({tiny.data.audio.corpus_seconds:g} s corpus per knob setting)"
    else:
        base = run_config_from_mapping({"data": {"audio": {"corpus_seconds": args.seconds}}})
        data, base_train, threads, samples = base.data, base.train, args.threads, int(args.samples)
        where = f"the default dataset ({args.seconds:g} s corpus per knob setting)"
    if args.data_dir:
        data = dataclasses.replace(data, data_dir=args.data_dir)
    train_cfg = dataclasses.replace(base_train, max_samples=samples, max_minutes=0.0, max_epochs=100_000,
                                    early_stopping_patience=0, threads=threads, audio_seconds=0.0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ampstudy-esr-budget-") as work:
        for preset in args.presets:
            cfg = run_config_from_mapping({"experiment": "benchmark-esr-budget"})
            cfg = dataclasses.replace(cfg, run_name=preset, data=data, train=train_cfg,
                                      model=model_from_mapping({"preset": preset}))
            r = train(cfg, track=False, evaluate_test=True, progress=False, work_dir=f"{work}/{preset}")
            rows.append((preset, r))
            print(f"{preset}: {r.samples:,} training samples ({r.steps} steps, stopped by {r.stopped_by}), "
                  f"val ESR tail-aware {r.val_esr_tail_aware:.4g}, test ESR tail-aware {r.test_esr_tail_aware:.4g}, "
                  f"{r.wall_seconds:.0f} s wall", flush=True)
    first_val, first_test = rows[0][1].val_esr_tail_aware, rows[0][1].test_esr_tail_aware
    lines = [f"WaveNet presets after {samples:,} training samples each on {where}; trained on "
             f"{rows[0][1].device}, no early stopping, no time limit. Tail-aware ESR (pre-emphasis "
             f"{train_cfg.loss.pre_emphasis:g}) of the best checkpoint; ratios to {rows[0][0]}. Wall seconds are "
             "information only: the presets are compared at equal training samples.", "",
             "| preset | params | training samples | steps | val ESR | test ESR | val ratio | test ratio | epochs "
             "| RTF | wall s |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for preset, r in rows:
        lines.append(f"| {preset} | {r.cost['params']:,} | {r.samples:,} | {r.steps} | {r.val_esr_tail_aware:.4g} "
                     f"| {r.test_esr_tail_aware:.4g} | {r.val_esr_tail_aware / first_val:.3f} "
                     f"| {r.test_esr_tail_aware / first_test:.3f} | {r.epochs} | {r.cost['rtf']:.1f}x "
                     f"| {r.wall_seconds:.0f} |")
    short = [preset for preset, r in rows if r.stopped_by != SAMPLE_BUDGET]
    if short:
        lines += ["", f"Not at equal compute: {', '.join(short)} stopped before the sample budget."]
    lines += ["", "Damskägg et al. 2019 trained for hours on a GPU on their Bassman SPICE data; compare shape, "
              "not absolute values: their ESR is on their own corpus and pre-emphasis filter."]
    text = "\n".join(lines)
    from benchmarks.results_file import publish

    publish("esr_budget", text, write=not args.no_write and not args.smoke, argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
