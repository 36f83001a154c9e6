"""What MLflow tracking costs a trial: wall time of `train()` with tracking vs `track=False`.

Runs the same trial config alternately without tracking, with MLflow but no audio examples, and
with full logging (after one untimed warm-up of each, which also simulates the dataset), and
prints the median wall times and their ratios (target < 1.05). Tracking logs params, per-epoch
metrics, the model directory, the checkpoint, audio examples and plots; without it train() still
fits and saves the model the same way. The extra time is per trial, not per step, so the ratio
shrinks as trials get longer: the script also projects it for longer trials.

    python benchmarks/tracking_overhead.py                      # studies/tiny.toml's base config
    python benchmarks/tracking_overhead.py --epochs 10 --batches 40 --repeats 3
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", default=str(REPO / "studies" / "tiny.toml"), help="study file whose [base] is used")
    parser.add_argument("--epochs", type=int, default=6, help="max_epochs of the trial (default 6)")
    parser.add_argument("--batches", type=int, default=20, help="training batches per epoch (default 20)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per mode (default 3)")
    parser.add_argument("--workdir", help="where data and mlruns go (default: a temp dir)")
    return parser.parse_args(argv)


def trial_config(args: argparse.Namespace, data_dir: Path):
    from studies.spec import load_study_spec

    base = load_study_spec(args.study).base
    train = dataclasses.replace(base.train, max_epochs=args.epochs, limit_train_batches=args.batches,
                                early_stopping_patience=args.epochs, max_minutes=0.0)
    data = dataclasses.replace(base.data, data_dir=str(data_dir))
    return dataclasses.replace(base, train=train, data=data, run_name="tracking-overhead")


def timed(cfg, track: bool, root: Path, uri: str) -> float:
    from training.train import train

    started = time.perf_counter()
    train(cfg, track=track, tracking_uri=uri, progress=False, work_dir=root / "work" / f"{track}-{time.time_ns()}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="ampstudy-bench-"))
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    (root / "mlruns").mkdir(parents=True, exist_ok=True)
    cfg = trial_config(args, root / "data")
    silent = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, audio_seconds=0.0))
    modes = {  # label -> (config, track)
        "no tracking": (cfg, False),
        "MLflow, no audio/plots": (silent, True),
        "MLflow, full logging": (cfg, True),
    }
    print(f"config: {cfg.model.channels} channels, {len(cfg.model.dilations)} layers, "
          f"{cfg.train.max_epochs} epochs x {cfg.train.limit_train_batches} batches, "
          f"{cfg.train.audio_seconds} s audio examples; workdir {root}")
    for config, track in modes.values():
        timed(config, track, root, uri)  # warm-up: dataset, imports, MLflow store migrations
    times: dict[str, list[float]] = {label: [] for label in modes}
    for _ in range(args.repeats):
        for label, (config, track) in modes.items():
            times[label].append(timed(config, track, root, uri))
    off = statistics.median(times["no tracking"])
    print(f"{'mode':<26}{'median s':>10}{'ratio':>8}   runs")
    for label, runs in times.items():
        median = statistics.median(runs)
        print(f"{label:<26}{median:>10.2f}{median / off:>8.3f}   {'  '.join(f'{t:.2f}' for t in runs)}")
    extra = statistics.median(times["MLflow, full logging"]) - off
    print(f"tracking adds {extra:+.2f} s per trial (constant: params, final artifacts, audio examples); "
          "projected ratio for longer trials:")
    for minutes in (0.5, 2, 10, 30):
        ratio = (minutes * 60 + extra) / (minutes * 60)
        print(f"  {minutes:>4g} min trial: {ratio:.3f}  ({'OK' if ratio < 1.05 else 'over'} vs target 1.05)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
