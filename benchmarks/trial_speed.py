"""One trial of the main study, end to end, on each device: what a GPU buys a study.

The trial trains the base config of studies/bassman_wavenet.toml (or --study; WaveNet3 with FiLM,
16 x 8192 batches, loss reference "dataset", the study's budget.trial_samples) on the study's
dataset with `train()`, exactly as an Optuna trial does (tracked into a temporary SQLite MLflow store, audio,
plots and the model logged), capped at the study's trial_max_minutes (or --minutes). Every device
gets the same trial (the same training samples): what differs is the wall time, which is what this
measures. Printed per device: wall seconds, training samples and steps, epochs, seconds per epoch,
training samples per wall second and its ratio to the first device's, why fitting stopped (a
"time limit" row trained fewer samples than the others: compare its samples/s, not its wall
seconds) and the validation ESR reached. The dataset is simulated first (once; cached under data/,
or --data-dir, and the time is printed apart: a study pays it once, not per trial). Written to
benchmarks/results/trial_speed.md.

    .venv/bin/python benchmarks/trial_speed.py --devices cpu,cuda [--minutes 5]
    .venv/bin/python benchmarks/trial_speed.py --smoke --data-dir DIR   # studies/tiny.toml, seconds

`--smoke` runs one epoch of studies/tiny.toml's trial, without audio examples, on its dataset
(`--data-dir`: where it is cached), on the CPU unless --devices says otherwise: it checks that the
script runs, measures nothing and writes nothing. `benchmarks/model_speed.py --trial` runs the same
after its throughput tables (printed only).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without install

MAIN_STUDY = REPO / "studies" / "bassman_wavenet.toml"
TINY_STUDY = REPO / "studies" / "tiny.toml"
SMOKE_TRAIN = {"max_epochs": 1, "audio_seconds": 0.0}  # one epoch, no audio/plot examples: seconds, not a minute


def time_trials(devices: list[str], max_minutes: float | None = None, study: Path = MAIN_STUDY,
                data_overrides: dict | None = None, auto_batch: bool = False,
                train_overrides: dict | None = None) -> list[dict]:
    """Train `study`'s trial (its [base] with its budget) once per device, printing a row each; returns the rows."""
    from datamodules.dataset import prepare_dataset
    from studies.spec import load_study_spec
    from training.devices import placement
    from training.train import train

    spec = load_study_spec(study)
    base = spec.base
    if data_overrides:
        base = dataclasses.replace(base, data=dataclasses.replace(base.data, **data_overrides))
    if train_overrides:
        base = dataclasses.replace(base, train=dataclasses.replace(base.train, **train_overrides))
    minutes = max_minutes or spec.budget.trial_max_minutes
    started = time.perf_counter()
    path = prepare_dataset(base.data, progress=True)
    dataset_seconds = time.perf_counter() - started
    budget = f"{base.train.max_samples:,} training samples" if base.train.max_samples else "no sample budget"
    print(f"\none trial of {study.name} ({base.model.receptive_field}-sample receptive field, {budget}): "
          f"dataset {path} ready in {dataset_seconds:.0f} s (once per study); fitting capped at {minutes:g} min")
    print(f"{'device':<8}{'batch':>12}{'wall s':>9}{'samples':>14}{'steps':>7}{'epochs':>8}{'s/epoch':>9}"
          f"{'samples/s':>11}{'ratio':>8}{'val ESR':>10}  stopped by")
    rows = []
    for device in devices:
        train_cfg = dataclasses.replace(base.train, accelerator="cuda" if device.startswith("cuda") else "cpu",
                                        max_minutes=minutes)
        if auto_batch:
            train_cfg = dataclasses.replace(train_cfg, batch_size="auto", segment_samples="auto")
        cfg = dataclasses.replace(base, run_name=f"trial-speed-{device}", train=train_cfg)
        with tempfile.TemporaryDirectory(prefix="ampstudy-trial-speed-") as tmp:
            began = time.perf_counter()
            result = train(cfg, tracking_uri=f"sqlite:///{tmp}/mlflow.db", progress=False, work_dir=f"{tmp}/work")
            wall = time.perf_counter() - began
        where = placement(train_cfg)  # the batch shape it trained with ("auto" resolved for the device)
        row = {"device": device, "batch": f"{where.batch_size}x{where.segment_samples}", "wall": wall,
               "samples": result.samples, "steps": result.steps, "epochs": result.epochs,
               "per_epoch": wall / max(result.epochs, 1), "samples_per_s": result.samples / wall,
               "stopped_by": result.stopped_by, "val_esr_tail_aware": result.val_esr_tail_aware}
        row["ratio"] = row["samples_per_s"] / rows[0]["samples_per_s"] if rows else 1.0
        rows.append(row)
        print(f"{device:<8}{row['batch']:>12}{wall:>9.0f}{result.samples:>14,}{result.steps:>7}{result.epochs:>8}"
              f"{row['per_epoch']:>9.1f}{row['samples_per_s']:>11,.0f}{row['ratio']:>7.2f}x"
              f"{result.val_esr_tail_aware:>10.4f}  {result.stopped_by}", flush=True)
    for row in rows:
        row.update(study=study.name, budget=budget, minutes=minutes, dataset_seconds=dataset_seconds)
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows of `time_trials` as the results file's table."""
    first = rows[0]
    lines = [f"One trial of {first['study']} ([base] with its budget: {first['budget']}), tracked into a temporary "
             f"SQLite MLflow store as a study's trial is, on each device; fitting capped at {first['minutes']:g} min. "
             f"Dataset ready in {first['dataset_seconds']:.0f} s beforehand (once per study, not counted). "
             f"Ratio: training samples per wall second relative to {first['device']}; a row stopped by the time "
             "limit trained fewer samples than its budget.", "",
             "| device | batch | wall s | training samples | steps | epochs | s/epoch | samples/s | ratio | val ESR "
             "| stopped by |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['device']} | {r['batch']} | {r['wall']:.0f} | {r['samples']:,} | {r['steps']} | {r['epochs']} "
              f"| {r['per_epoch']:.1f} | {r['samples_per_s']:,.0f} | {r['ratio']:.2f}x | {r['val_esr_tail_aware']:.4f} "
              f"| {r['stopped_by']} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="cpu", help="e.g. cpu,cuda")
    parser.add_argument("--study", default=str(MAIN_STUDY), help="study file whose trial is timed")
    parser.add_argument("--minutes", type=float, default=0.0, help="fitting cap (default: the study's)")
    parser.add_argument("--auto-batch", action="store_true", help="batch_size/segment_samples \"auto\" (device profile)")
    parser.add_argument("--data-dir",
                        help="dataset cache (default: the study's; with --smoke, where the tiny dataset is)")
    parser.add_argument("--smoke", action="store_true",
                        help="one epoch of studies/tiny.toml's trial on its dataset: checks that it runs, "
                             "measures and writes nothing")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/results/ alone")
    args = parser.parse_args(argv)
    overrides = {"data_dir": args.data_dir} if args.data_dir else None
    rows = time_trials([d.strip() for d in args.devices.split(",") if d.strip()], args.minutes or None,
                       study=TINY_STUDY if args.smoke else Path(args.study), data_overrides=overrides,
                       auto_batch=args.auto_batch,
                       train_overrides=SMOKE_TRAIN if args.smoke else None)
    text = markdown(rows)
    from benchmarks.results_file import publish

    publish("trial_speed", text, write=not args.no_write and not args.smoke, argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
