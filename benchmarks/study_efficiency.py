"""Best validation ESR reached vs training samples spent: Hyperband vs median pruning vs random search.

Each arm is a real study (`run_study`, MLflow tracking, the study's own trials) of one study file's
dataset, base config and search space, stopped at the same compute: `budget.total_samples`, the
training samples all its trials may spend (pruned trials count what they trained). Every trial may
train at most `--epochs` epochs (budget.trial_samples); an epoch is limit_train_batches steps.

- `tpe+hyperband`: TPE, Hyperband on training samples (rungs 1, 3, 9 epochs with reduction factor 3);
- `tpe+median`: TPE, median pruning after 1 epoch;
- `random`: random search, no pruning (every trial trains its whole budget).

Each arm runs with `--seeds` sampler seeds. Printed and written to benchmarks/results/
study_efficiency.md: the median over seeds (and min..max) of the best tail-aware validation ESR
reached after each quarter of the compute, and trials started / completed per arm. The studies'
Optuna storage, MLflow store and trial folders live in a temporary directory (removed afterwards)
or `--workdir` (kept); the dataset is the study's, cached under its data_dir (or `--data-dir`).

    .venv/bin/python benchmarks/study_efficiency.py                     # studies/tiny.toml, 3 seeds
    .venv/bin/python benchmarks/study_efficiency.py --smoke --data-dir DIR   # seconds, nothing written

`--smoke` runs each arm once (sampler seed 0) on studies/tiny.toml's dataset (`--data-dir`: where it
is cached) for the compute of one trial of 2 epochs: it checks that the script runs, measures nothing
and writes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without install

from benchmarks.results_file import publish  # noqa: E402

ARMS = {"tpe+hyperband": ("tpe", "hyperband"), "tpe+median": ("tpe", "median"), "random": ("random", "none")}
FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", default=str(REPO / "studies" / "tiny.toml"))
    parser.add_argument("--seeds", type=int, default=3, help="sampler seeds per arm (default 3)")
    parser.add_argument("--epochs", type=int, default=9, help="most epochs a trial trains (default 9)")
    parser.add_argument("--full-trials", type=float, default=20,
                        help="each arm's compute, in trials of --epochs epochs (default 20)")
    parser.add_argument("--smoke", action="store_true",
                        help="studies/tiny.toml, 1 seed, 2 epochs, 1 full trial of compute, nothing written")
    parser.add_argument("--workdir", help="where the Optuna storage, mlruns and trial folders go (default: a temp "
                                          "dir, removed afterwards)")
    parser.add_argument("--data-dir", help="dataset cache (default: the study's data_dir)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/results/ alone")
    args = parser.parse_args(argv)
    if args.smoke:
        args.study, args.seeds, args.epochs, args.full_trials = str(REPO / "studies" / "tiny.toml"), 1, 2, 1
    return args


def arm_spec(base_spec, name: str, sampler: str, pruner: str, seed: int, epochs: int, total: int, data_dir: str):
    from studies.spec import PrunerSpec

    train = base_spec.base.train
    per_epoch = train.limit_train_batches * int(train.batch_size) * int(train.segment_samples)
    base = dataclasses.replace(
        base_spec.base, train=dataclasses.replace(train, max_epochs=100 * epochs, max_samples=epochs * per_epoch,
                                                  early_stopping_patience=0, audio_seconds=0),
        data=dataclasses.replace(base_spec.base.data, data_dir=data_dir))
    pruners = {"hyperband": PrunerSpec(kind="hyperband", min_samples=per_epoch, reduction_factor=3),
               "median": PrunerSpec(kind="median", startup_trials=3, warmup_samples=per_epoch),
               "none": PrunerSpec(kind="none")}
    o = base_spec.options
    options = dataclasses.replace(
        o, name=name, sampler=dataclasses.replace(o.sampler, kind=sampler, seed=seed), pruner=pruners[pruner],
        budget=dataclasses.replace(o.budget, n_trials=1000, timeout_minutes=0.0, trial_samples=epochs * per_epoch,
                                   total_samples=total))
    return dataclasses.replace(base_spec, options=options, base=base)


def best_by_samples(study) -> list[tuple[int, float]]:
    """(training samples spent so far, best tail-aware validation ESR so far) after each trial, in the
    order trials ended."""
    from studies.budget import trial_samples

    spent, best, curve = 0, math.inf, []
    for t in sorted((t for t in study.get_trials() if t.datetime_complete), key=lambda t: t.datetime_complete):
        spent += trial_samples(t)
        if t.state.name == "COMPLETE" and t.values and math.isfinite(t.values[0]):
            best = min(best, t.values[0])
        curve.append((spent, best))
    return curve


def best_at(curve: list[tuple[int, float]], samples: float) -> float:
    reached = [b for s, b in curve if s <= samples]
    return reached[-1] if reached else math.inf


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.workdir:
            root = Path(args.workdir).resolve()
            root.mkdir(parents=True, exist_ok=True)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ampstudy-bench-")))
        return measure(args, argv, root)


def measure(args: argparse.Namespace, argv: list[str] | None, root: Path) -> int:
    from studies.runner import run_study
    from studies.spec import load_study_spec

    study_path = Path(args.study).resolve()
    base_spec = load_study_spec(study_path)
    data_dir = str(Path(args.data_dir or base_spec.base.data.data_dir).resolve())  # before the chdir below
    train = base_spec.base.train
    per_epoch = train.limit_train_batches * int(train.batch_size) * int(train.segment_samples)
    if per_epoch <= 0:
        raise SystemExit(f"{study_path}: base.train needs limit_train_batches and numeric batch/segment sizes")
    total = int(args.full_trials * args.epochs * per_epoch)
    storage = f"sqlite:///{root / 'mlruns' / 'optuna.db'}"
    tracking_uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"  # not MLFLOW_TRACKING_URI's store
    (root / "mlruns").mkdir(parents=True, exist_ok=True)
    results: dict[str, list[tuple[list[tuple[int, float]], int, int]]] = {arm: [] for arm in ARMS}
    cwd = os.getcwd()
    os.chdir(root)  # the trials' folders (mlruns/work/) land here
    try:
        for seed in range(args.seeds):
            for arm, (sampler, pruner) in ARMS.items():
                spec = arm_spec(base_spec, f"eff-{arm}-{seed}".replace("+", "-"), sampler, pruner, seed, args.epochs,
                                total, data_dir)
                print(f"--- {arm}, seed {seed}: {total:,} training samples", flush=True)
                study = run_study(spec, storage_url=storage, tracking_uri=tracking_uri, report=False)
                trials = study.get_trials()
                results[arm].append((best_by_samples(study), len(trials),
                                     sum(t.state.name == "COMPLETE" for t in trials)))
    finally:
        os.chdir(cwd)
    lines = [f"{base_spec.name} ({study_path.name}): each arm may spend {total:,} training samples "
             f"({args.full_trials:g} trials of {args.epochs} epochs x {per_epoch:,} samples); {args.seeds} sampler "
             "seed(s) per arm; best tail-aware validation ESR reached, median over seeds (min..max).", "",
             "| arm | " + " | ".join(f"after {f:.0%} of the samples" for f in FRACTIONS) + " | trials (complete) |",
             "| --- |" + " --- |" * (len(FRACTIONS) + 1)]
    for arm, runs in results.items():
        cells = []
        for fraction in FRACTIONS:
            values = [best_at(curve, fraction * total) for curve, _, _ in runs]
            cells.append(f"{_fmt(statistics.median(values))} ({_fmt(min(values))}..{_fmt(max(values))})")
        counts = ", ".join(f"{n} ({c})" for _, n, c in runs)
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {counts} |")
    text = "\n".join(lines)
    publish("study_efficiency", text, write=not args.no_write and not args.smoke, argv=argv)
    return 0


def _fmt(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.4f}"


if __name__ == "__main__":
    sys.exit(main())
