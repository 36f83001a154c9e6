"""Best validation ESR reached vs wall time: TPE with median pruning vs random search without.

Both arms run the same study file (same dataset, base config, search space and trial budget) as
real studies with MLflow tracking, one after the other in one process; the table prints, for
each arm, the best validation ESR reached by elapsed wall time, then totals.

    python benchmarks/study_efficiency.py                          # studies/tiny.toml, 12 trials
    python benchmarks/study_efficiency.py --trials 20 --epochs 8 --batches 12
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", default=str(REPO / "studies" / "tiny.toml"))
    parser.add_argument("--trials", type=int, default=12, help="trial budget of each arm (default 12)")
    parser.add_argument("--epochs", type=int, default=6, help="max_epochs per trial (default 6)")
    parser.add_argument("--batches", type=int, default=10, help="training batches per epoch (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed of both arms")
    parser.add_argument("--workdir", help="where data and mlruns go (default: a temp dir)")
    return parser.parse_args(argv)


def arm_spec(base_spec, name: str, sampler: str, pruner: str, args: argparse.Namespace, data_dir: Path):
    from studies.spec import PrunerSpec

    o = base_spec.options
    train = dataclasses.replace(base_spec.base.train, max_epochs=args.epochs, limit_train_batches=args.batches,
                                early_stopping_patience=args.epochs)
    base = dataclasses.replace(base_spec.base, train=train,
                               data=dataclasses.replace(base_spec.base.data, data_dir=str(data_dir)))
    options = dataclasses.replace(
        o, name=name, sampler=dataclasses.replace(o.sampler, kind=sampler, seed=args.seed),
        pruner=dataclasses.replace(o.pruner, kind=pruner) if pruner != "none" else PrunerSpec(kind="none"),
        budget=dataclasses.replace(o.budget, n_trials=args.trials, timeout_minutes=0.0))
    return dataclasses.replace(base_spec, options=options, base=base)


def best_by_time(study) -> list[tuple[float, float]]:
    """(seconds since the first trial started, best ESR so far) at each trial completion."""
    trials = [t for t in study.get_trials() if t.datetime_complete]
    start = min(t.datetime_start for t in trials)
    best, out = math.inf, []
    for t in sorted(trials, key=lambda t: t.datetime_complete):
        if t.state.name == "COMPLETE" and t.values and math.isfinite(t.values[0]):
            best = min(best, t.values[0])
        out.append(((t.datetime_complete - start).total_seconds(), best))
    return out


def best_at(curve: list[tuple[float, float]], seconds: float) -> float:
    reached = [b for t, b in curve if t <= seconds]
    return reached[-1] if reached else math.inf


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="ampstudy-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    os.chdir(root)  # the default mlruns/ stores land here
    from studies.runner import run_study
    from studies.spec import load_study_spec

    base_spec = load_study_spec(args.study)
    arms = {"TPE + median pruning": arm_spec(base_spec, "eff-tpe-median", "tpe", "median", args, root / "data"),
            "random, no pruning": arm_spec(base_spec, "eff-random", "random", "none", args, root / "data")}
    curves, states = {}, {}
    for label, spec in arms.items():
        print(f"--- {label}: {args.trials} trials", flush=True)
        study = run_study(spec, report=False)
        curves[label] = best_by_time(study)
        states[label] = {s: sum(t.state.name == s for t in study.get_trials()) for s in ("COMPLETE", "PRUNED", "FAIL")}
    horizon = max(c[-1][0] for c in curves.values())
    labels = list(curves)
    print(f"\nbest validation ESR reached by wall time (workdir {root})")
    print(f"{'seconds':>9}" + "".join(f"{label:>30}" for label in labels))
    for fraction in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        seconds = fraction * horizon
        print(f"{seconds:>9.1f}" + "".join(f"{_fmt(best_at(curves[label], seconds)):>30}" for label in labels))
    print(f"{'total s':>9}" + "".join(f"{curves[label][-1][0]:>30.1f}" for label in labels))
    print(f"{'final':>9}" + "".join(f"{_fmt(curves[label][-1][1]):>30}" for label in labels))
    print(f"{'trials':>9}" + "".join(f"{'{COMPLETE} done, {PRUNED} pruned, {FAIL} failed'.format(**states[label]):>30}"
                                     for label in labels))
    return 0


def _fmt(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.4f}"


if __name__ == "__main__":
    sys.exit(main())
