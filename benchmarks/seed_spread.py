"""How much a model's test ESR moves when only the training seed changes: the noise floor under
which `ampstudy promote` must not move the champion (studies/champion_gate.py GATE_MARGIN).

One configuration (a study file's [base], with its budget.trial_samples: equal compute per seed)
is trained with `--seeds` training seeds (weights and batch order; the data and its splits stay),
each tested on the study's test split by the code promote uses. Printed and written to
benchmarks/results/seed_spread.md: per seed the tail-aware test ESR and its parts, then the
spread: max/min - 1 of the tail-aware number, and the same for the pairs of seeds (median pair).

    .venv/bin/python benchmarks/seed_spread.py                      # studies/demo.toml, 5 seeds
    .venv/bin/python benchmarks/seed_spread.py --smoke --data-dir DIR   # seconds, nothing written

The dataset is the study's, cached under its data_dir (or `--data-dir`); the runs' model folders live
in a temporary directory. `--smoke` trains studies/tiny.toml's [base] with 2 seeds for 20,000 samples
each on its dataset (`--data-dir`: where it is cached): it checks that the script runs, measures
nothing and writes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without install

from benchmarks.results_file import publish  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", default=str(REPO / "studies" / "demo.toml"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true",
                        help="studies/tiny.toml, 2 seeds, 20,000 samples each, nothing written")
    parser.add_argument("--data-dir", help="dataset cache (default: the study's)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/results/ alone")
    args = parser.parse_args(argv)
    from studies.spec import load_study_spec
    from training.train import train

    spec = load_study_spec(REPO / "studies" / "tiny.toml" if args.smoke else args.study)
    base = spec.base
    seeds = 2 if args.smoke else args.seeds
    if args.smoke:
        base = dataclasses.replace(base, train=dataclasses.replace(base.train, max_samples=20_000, audio_seconds=0))
    if args.data_dir:
        base = dataclasses.replace(base, data=dataclasses.replace(base.data, data_dir=args.data_dir))
    rows = []
    with tempfile.TemporaryDirectory(prefix="ampstudy-seeds-") as work:
        for seed in range(seeds):
            cfg = dataclasses.replace(base, train=dataclasses.replace(base.train, seed=seed))
            result = train(cfg, track=False, evaluate_test=True, progress=False, work_dir=f"{work}/{seed}")
            test = result.test_metrics
            rows.append((seed, result.samples, test["esr_tail_aware"], test["esr_geomean_floored"],
                         test["esr_worst_scored_setting"]))
            print(f"seed {seed}: {result.samples:,} samples, test ESR tail-aware {test['esr_tail_aware']:.4g}",
                  flush=True)
    values = [r[2] for r in rows]
    pairs = [max(a, b) / min(a, b) - 1 for a, b in itertools.combinations(values, 2)]
    lines = [f"{spec.name}: [base] of {Path(spec.path).name}, {rows[0][1]:,} training samples per seed, "
             f"{base.train.threads or 'default'} thread(s); test split as `ampstudy promote` evaluates it.", "",
             "| seed | training samples | test ESR tail-aware | geometric mean (floored) | worst setting |",
             "| --- | --- | --- | --- | --- |",
             *(f"| {s} | {n:,} | {t:.4g} | {g:.4g} | {w:.4g} |" for s, n, t, g, w in rows), "",
             f"spread of the tail-aware test ESR over {seeds} seeds: max/min - 1 = **{max(values) / min(values) - 1:.1%}**; "
             f"between two seeds: median {statistics.median(pairs):.1%}, largest {max(pairs):.1%}."]
    text = "\n".join(lines)
    publish("seed_spread", text, write=not args.no_write and not args.smoke, argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
