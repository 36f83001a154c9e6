"""Knob conditioning: generalisation to unseen knob settings, and what conditioning costs.

    python benchmarks/conditioning.py --minutes 5 --seconds 10 --settings 8 --held-out 2

Trains one FiLM-conditioned WaveNet on a seeded random sample of knob settings, holding whole
settings out for testing, and prints the test ESR on settings seen in training vs held-out settings
(the generalisation gap). Then compares MACs/sample and the single-thread streaming real-time factor
of unconditioned, FiLM and concat models of the same size.
"""

from __future__ import annotations

import argparse
import dataclasses

from ampmodel.config import PRESETS
from ampmodel.cost import compute_cost
from ampmodel.wavenet import WaveNet
from training.run_config import run_config_from_mapping
from training.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="corpus seconds per knob setting")
    parser.add_argument("--settings", type=int, default=8, help="random knob settings")
    parser.add_argument("--held-out", type=int, default=2, help="settings kept for testing only")
    parser.add_argument("--preset", default="WaveNet2")
    args = parser.parse_args()

    cfg = run_config_from_mapping({
        "experiment": "benchmark-conditioning", "run_name": f"film-{args.settings}settings",
        "data": {"corpus_seconds": args.seconds, "settings": [], "random_settings": args.settings,
                 "held_out_settings": args.held_out},
        "model": {"preset": args.preset, "conditioning": "film"},
        "train": {"max_minutes": args.minutes, "max_epochs": 100000, "early_stopping_patience": 1000},
    })
    result = train(cfg, evaluate_test=True)
    seen, held = result.test_metrics["esr_seen_settings"], result.test_metrics["esr_held_out_settings"]
    print(f"\nFiLM {args.preset}, {args.settings} random knob settings ({args.held_out} held out), "
          f"{args.minutes:g} min")
    print(f"test ESR on seen settings (unseen audio): {seen:.4f}")
    print(f"test ESR on held-out settings:            {held:.4f}")
    print(f"generalisation gap (held-out / seen):     {held / seen:.2f}x")
    for label, value in sorted(result.test_metrics["esr_per_setting"].items()):
        print(f"  {label}: {value:.4f}")

    print(f"\ncost of conditioning ({args.preset} size, 44.1 kHz, 1 thread, 1 s blocks)")
    base = compute_cost(WaveNet(PRESETS[args.preset]), fs=44100)
    print(f"{'model':8} {'params':>8} {'MACs/sample':>12} {'RTF':>8} {'MACs ratio':>11} {'RTF ratio':>10}")
    for method in ("none", "film", "concat"):
        cost = compute_cost(WaveNet(dataclasses.replace(PRESETS[args.preset], conditioning=method)), fs=44100)
        print(f"{method:8} {cost['params']:>8} {cost['macs_per_sample']:>12.0f} {cost['rtf']:>7.1f}x "
              f"{cost['macs_per_sample'] / base['macs_per_sample']:>11.3f} {cost['rtf'] / base['rtf']:>10.3f}")


if __name__ == "__main__":
    main()
