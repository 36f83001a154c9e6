"""Validation ESR of the paper's WaveNets after a fixed CPU training budget on the default dataset.

    python benchmarks/esr_budget.py --minutes 20 --presets WaveNet3
    python benchmarks/esr_budget.py --minutes 2 --seconds 20 --presets WaveNet1 WaveNet2 WaveNet3

Each preset trains with `train(cfg)` (the same code as `ampstudy train`) for the same wall-clock
budget and reports the whole-signal validation ESR (pre-emphasis 0.95), epochs, and cost, side by
side. Runs go to the MLflow experiment `benchmark-esr-budget`.
"""

from __future__ import annotations

import argparse

from training.run_config import run_config_from_mapping
from training.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget per preset")
    parser.add_argument("--seconds", type=float, default=60.0, help="corpus seconds (default dataset: 60)")
    parser.add_argument("--presets", nargs="+", default=["WaveNet3"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for preset in args.presets:
        cfg = run_config_from_mapping({
            "experiment": "benchmark-esr-budget", "run_name": f"{preset}-{args.minutes:g}min",
            "data": {"corpus_seconds": args.seconds},
            "model": {"preset": preset},
            "train": {"max_minutes": args.minutes, "max_epochs": 100000, "early_stopping_patience": 1000,
                      "threads": args.threads},
        })
        result = train(cfg, evaluate_test=True)
        rows.append((preset, result))
    print(f"\nWaveNet presets after {args.minutes:g} CPU minutes ({args.threads} threads), "
          f"{args.seconds:g} s corpus per knob setting")
    print(f"{'preset':10} {'params':>8} {'val ESR':>9} {'test ESR':>9} {'epochs':>7} {'RTF':>7}")
    for preset, r in rows:
        print(f"{preset:10} {r.cost['params']:>8} {r.val_esr_tail_aware:>9.4f} {r.test_esr_tail_aware:>9.4f} {r.epochs:>7} "
              f"{r.cost['rtf']:>6.1f}x")
    print("Damskägg et al. 2019 trained for hours on a GPU on their Bassman SPICE data; compare shape, "
          "not absolute values: their ESR is on their own corpus and pre-emphasis filter.")


if __name__ == "__main__":
    main()
