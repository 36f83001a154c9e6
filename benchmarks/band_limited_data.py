"""Does band-limited SPICE data change the model a study picks? One configuration trained for the same
training samples on point-sampled data (oversampling 1: the chain of datasets before it existed) and
on band-limited data (the default oversampling), both scored on the band-limited data's held-out
test settings, the closer of the two to the amp.

One study file's [base] (default: the knob study) with `--samples` per run and `--seeds` training
seeds per arm; the two datasets share settings, DI and splits (only `data.simulation.oversampling` differs),
and the point-sampled model's output is compared in volts (its dataset's target scale differs a
little). Per arm: the tail-aware test ESR on the band-limited test settings, its parts, and what
the arm's own test split says (what a study on that data would have reported). Written to
benchmarks/results/band_limited_data.md.

    .venv/bin/python benchmarks/band_limited_data.py --samples 17825792 --seeds 2 --threads 1
    .venv/bin/python benchmarks/band_limited_data.py --smoke       # studies/tiny.toml, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without install

from benchmarks.results_file import publish  # noqa: E402


def scored_on(net, data_cfg, volts_per_unit: float) -> dict:
    """Test metrics of `net` (whose outputs are in units of `volts_per_unit` volts) on `data_cfg`'s test split."""
    from datamodules.bassman import BassmanDataModule
    from training.evaluate import evaluate_net

    datamodule = BassmanDataModule(data_cfg, receptive_field=net.receptive_field, segment_samples=1, batch_size=1,
                                   progress=False)
    datamodule.prepare_data()
    datamodule.setup()
    ratio = datamodule.data.target_scale_volts / volts_per_unit  # its targets in the net's units
    if ratio != 1.0:
        datamodule._data = dataclasses.replace(datamodule.data, targets=[t * ratio for t in datamodule.data.targets])
    return evaluate_net(net, datamodule, "test")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", default=str(REPO / "studies" / "bassman_wavenet.toml"))
    parser.add_argument("--samples", type=float, default=17_825_792, help="training samples per run")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--data-dir", help="dataset cache of both arms (default: the study's)")
    parser.add_argument("--smoke", action="store_true", help="studies/tiny.toml, 1 seed, a few thousand samples")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/results/ alone")
    args = parser.parse_args(argv)
    from datamodules.dataset import prepare_dataset
    from studies.spec import load_study_spec
    from training.model_io import load_model
    from training.train import train

    spec = load_study_spec(REPO / "studies" / "tiny.toml" if args.smoke else args.study)
    base = spec.base
    samples, seeds = (20_000, 1) if args.smoke else (int(args.samples), args.seeds)
    data = base.data if not args.data_dir else dataclasses.replace(base.data, data_dir=args.data_dir)
    arms = {"point-sampled (K = 1)": dataclasses.replace(data, simulation=dataclasses.replace(data.simulation,
                                                                                                oversampling=1)),
            f"band-limited (K = {data.simulation.oversampling})": data}
    reference = data
    rows = []
    with tempfile.TemporaryDirectory(prefix="ampstudy-bandlimit-") as work:
        for name, arm_data in arms.items():
            folder = prepare_dataset(arm_data, progress=True)
            own_scale = float(json.loads((folder / "manifest.json").read_text())["target_scale_volts"])
            for seed in range(seeds):
                train_cfg = dataclasses.replace(base.train, seed=seed, max_samples=samples, threads=args.threads,
                                                max_minutes=0, audio_seconds=0)
                cfg = dataclasses.replace(base, data=arm_data, train=train_cfg)
                result = train(cfg, track=False, evaluate_test=True, progress=False, work_dir=f"{work}/{name}{seed}")
                net = load_model(result.model_dir).net
                on_reference = scored_on(net, reference, own_scale)
                rows.append((name, seed, result.samples, on_reference["esr_tail_aware"],
                             on_reference["esr_geomean_floored"], on_reference["esr_worst_scored_setting"],
                             result.test_metrics["esr_tail_aware"]))
                print(f"{name} seed {seed}: {result.samples:,} samples, test ESR tail-aware on band-limited "
                      f"{on_reference['esr_tail_aware']:.4g}, on its own data {result.test_metrics['esr_tail_aware']:.4g}",
                      flush=True)
    lines = [f"{spec.name}: [base] of {Path(spec.path).name}, {samples:,} training samples per run, "
             f"{args.threads} thread(s), {seeds} seed(s) per arm. Scored on the test settings of the band-limited "
             f"dataset (oversampling {reference.simulation.oversampling}); 'own' = the arm's own test split.", "",
             "| training data | seed | samples | test ESR tail-aware | geometric mean (floored) | worst setting "
             "| own test ESR tail-aware |", "| --- | --- | --- | --- | --- | --- | --- |",
             *(f"| {n} | {s} | {k:,} | {t:.4g} | {g:.4g} | {w:.4g} | {o:.4g} |" for n, s, k, t, g, w, o in rows), ""]
    for name in arms:
        values = [r[3] for r in rows if r[0] == name]
        lines.append(f"- {name}: median tail-aware test ESR {statistics.median(values):.4g} "
                     f"(range {min(values):.4g} .. {max(values):.4g})")
    text = "\n".join(lines)
    publish("band_limited_data", text, write=not args.no_write and not args.smoke, argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
