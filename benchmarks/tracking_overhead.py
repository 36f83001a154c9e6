"""What MLflow tracking costs a trial: wall time of `train()` with tracking vs `track=False`.

Runs the same trial config alternately without tracking, with MLflow but no audio examples, and
with full logging (after one untimed warm-up of each, which also builds the dataset if it is not
cached), and
prints the median wall times and their ratios (target < 1.05). Tracking logs params, per-epoch
metrics, the model directory, the checkpoint, audio examples and plots; without it train() still
fits and saves the model the same way. The extra time is per trial, not per step, so the ratio
shrinks as trials get longer: the script also projects it for longer trials. Every mode trains the
same config for the same epochs x batches (equal training samples): only the wall time differs.
Written to benchmarks/results/tracking_overhead.md. The MLflow store and the runs' work folders
live in a temporary directory (or --workdir); the dataset is the study's, cached under its data_dir
(or --data-dir).

    .venv/bin/python benchmarks/tracking_overhead.py                  # studies/tiny.toml's base config
    .venv/bin/python benchmarks/tracking_overhead.py --epochs 10 --batches 40 --repeats 3
    .venv/bin/python benchmarks/tracking_overhead.py --smoke --data-dir DIR   # seconds, nothing written

`--smoke` trains 1 epoch x 2 batches once per mode, without warm-ups, on studies/tiny.toml's dataset
(`--data-dir`: where it is cached): it checks that the script runs, measures nothing and writes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without install


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", default=str(REPO / "studies" / "tiny.toml"), help="study file whose [base] is used")
    parser.add_argument("--epochs", type=int, default=6, help="max_epochs of the trial (default 6)")
    parser.add_argument("--batches", type=int, default=20, help="training batches per epoch (default 20)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per mode (default 3)")
    parser.add_argument("--workdir", help="where mlruns and the runs' work folders go (default: a temp dir)")
    parser.add_argument("--data-dir", help="dataset cache (default: the study's data_dir)")
    parser.add_argument("--smoke", action="store_true",
                        help="studies/tiny.toml, 1 epoch x 2 batches, 1 run per mode, no warm-up, nothing written")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/results/ alone")
    args = parser.parse_args(argv)
    args.argv = argv  # for the results file's header
    if args.smoke:
        args.study, args.epochs, args.batches, args.repeats = str(REPO / "studies" / "tiny.toml"), 1, 2, 1
    return args


def trial_config(args: argparse.Namespace):
    from studies.spec import load_study_spec

    base = load_study_spec(args.study).base
    train = dataclasses.replace(base.train, max_epochs=args.epochs, limit_train_batches=args.batches,
                                early_stopping_patience=args.epochs, max_samples=0, max_minutes=0.0)
    data = dataclasses.replace(base.data, data_dir=args.data_dir) if args.data_dir else base.data
    return dataclasses.replace(base, train=train, data=data, run_name="tracking-overhead")


def timed(cfg, track: bool, root: Path, uri: str) -> float:
    from training.train import train

    started = time.perf_counter()
    train(cfg, track=track, tracking_uri=uri, progress=False, work_dir=root / "work" / f"{track}-{time.time_ns()}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workdir:
        return measure(args, Path(args.workdir))
    with tempfile.TemporaryDirectory(prefix="ampstudy-bench-") as tmp:
        return measure(args, Path(tmp))


def measure(args: argparse.Namespace, root: Path) -> int:
    from training.devices import placement

    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    (root / "mlruns").mkdir(parents=True, exist_ok=True)
    cfg = trial_config(args)
    silent = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, audio_seconds=0.0))
    modes = {  # label -> (config, track)
        "no tracking": (cfg, False),
        "MLflow, no audio/plots": (silent, True),
        "MLflow, full logging": (cfg, True),
    }
    print(f"config: {cfg.model.channels} channels, {len(cfg.model.dilations)} layers, "
          f"{cfg.train.max_epochs} epochs x {cfg.train.limit_train_batches} batches, "
          f"{cfg.train.audio_seconds} s audio examples; workdir {root}")
    if not args.smoke:
        for config, track in modes.values():
            timed(config, track, root, uri)  # warm-up: dataset, imports, MLflow store migrations
    times: dict[str, list[float]] = {label: [] for label in modes}
    for _ in range(args.repeats):
        for label, (config, track) in modes.items():
            times[label].append(timed(config, track, root, uri))
    off = statistics.median(times["no tracking"])
    batch = placement(cfg.train)  # "auto" batch shapes as the runs resolved them
    extra = statistics.median(times["MLflow, full logging"]) - off
    lines = [f"[base] of {Path(args.study).name}: {cfg.model.channels} channels, {len(cfg.model.dilations)} layers, "
             f"{cfg.train.max_epochs} epochs x {cfg.train.limit_train_batches} batches of {batch.batch_size} x "
             f"{batch.segment_samples} (the same training samples in every mode), {cfg.train.audio_seconds:g} s "
             f"audio examples; {args.repeats} timed run(s) per mode, alternating"
             f"{'' if args.smoke else ', after one untimed warm-up each'}. Ratio: median wall time over "
             "the untracked one's (target < 1.05).", "",
             "| mode | median s | ratio | runs (s) |", "| --- | --- | --- | --- |"]
    for label, runs in times.items():
        median = statistics.median(runs)
        lines.append(f"| {label} | {median:.2f} | {median / off:.3f} | {'  '.join(f'{t:.2f}' for t in runs)} |")
    lines += ["", f"Tracking adds {extra:+.2f} s per trial (constant: params, final artifacts, audio examples); "
              "projected ratio for longer trials:", ""]
    for minutes in (0.5, 2, 10, 30):
        ratio = (minutes * 60 + extra) / (minutes * 60)
        lines.append(f"- {minutes:g} min trial: {ratio:.3f} ({'OK' if ratio < 1.05 else 'over'} vs target 1.05)")
    text = "\n".join(lines)
    from benchmarks.results_file import publish

    publish("tracking_overhead", text, write=not args.no_write and not args.smoke, argv=args.argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
