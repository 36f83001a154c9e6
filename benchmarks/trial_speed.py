"""One trial of the main study, end to end, on each device: what a GPU buys a study.

The trial trains the base config of studies/bassman_wavenet.toml (WaveNet3 with FiLM, 16 x 8192
batches, loss reference "dataset") on the study's dataset with `train()`, exactly as an Optuna
trial does (tracked into a temporary SQLite MLflow store, audio, plots and the model logged),
capped at the study's trial_max_minutes (or --minutes). Printed per device: wall seconds, epochs,
seconds per epoch and the validation ESR reached. The dataset is simulated first (once; cached
under data/, and the time is printed apart: a study pays it once, not per trial).

    .venv/bin/python benchmarks/trial_speed.py --devices cpu,cuda [--minutes 5]
    .venv/bin/python benchmarks/trial_speed.py --devices cpu --smoke   # a tiny dataset and 0.1 min: does it run
`benchmarks/model_speed.py --trial` runs the same after its throughput tables.
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
SMOKE_DATA = {"design_settings": 4, "design_seconds": 1.0, "sweep_test_settings": False, "response_points": 0,
              "setting_split": (0.5, 0.25, 0.25)}


def time_trials(devices: list[str], max_minutes: float | None = None, study: Path = MAIN_STUDY,
                data_overrides: dict | None = None, auto_batch: bool = False) -> list[dict]:
    from datamodules.dataset import prepare_dataset
    from studies.spec import load_study_spec
    from training.train import train

    spec = load_study_spec(study)
    base = spec.base
    if data_overrides:
        base = dataclasses.replace(base, data=dataclasses.replace(base.data, **data_overrides))
    minutes = max_minutes or spec.budget.trial_max_minutes
    started = time.perf_counter()
    path = prepare_dataset(base.data, progress=True)
    print(f"\none trial of {study.name} ({base.model.receptive_field}-sample receptive field, "
          f"{base.data.design_settings} settings x {base.data.design_seconds:g} s): dataset {path} ready in "
          f"{time.perf_counter() - started:.0f} s (once per study); fitting capped at {minutes:g} min")
    print(f"{'device':<8}{'batch':>12}{'wall s':>9}{'epochs':>8}{'s/epoch':>9}{'val ESR':>10}")
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
        epochs = max(result.epochs, 1)
        batch = f"{train_cfg.batch_size}x{train_cfg.segment_samples}"
        print(f"{device:<8}{batch:>12}{wall:>9.0f}{result.epochs:>8}{wall / epochs:>9.1f}{result.val_esr_tail_aware:>10.4f}",
              flush=True)
        rows.append({"device": device, "wall": wall, "epochs": result.epochs, "val_esr_tail_aware": result.val_esr_tail_aware})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="cpu", help="e.g. cpu,cuda")
    parser.add_argument("--minutes", type=float, default=0.0, help="fitting cap (default: the study's)")
    parser.add_argument("--auto-batch", action="store_true", help="batch_size/segment_samples \"auto\" (device profile)")
    parser.add_argument("--smoke", action="store_true",
                        help="4 settings x 1 s, no sweep or response settings, 0.1 min: checks that it runs, measures nothing")
    args = parser.parse_args()
    overrides = SMOKE_DATA if args.smoke else None
    time_trials([d.strip() for d in args.devices.split(",") if d.strip()], 0.1 if args.smoke else args.minutes or None,
                data_overrides=overrides, auto_batch=args.auto_batch)


if __name__ == "__main__":
    main()
