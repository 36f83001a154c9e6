"""What knob conditioning costs: parameters, MACs per sample and single-thread streaming speed of
the same WaveNet without conditioning and with each conditioning method.

    .venv/bin/python benchmarks/conditioning.py            # writes benchmarks/results/conditioning.md
    .venv/bin/python benchmarks/conditioning.py --smoke    # one preset, prints only

Counted by `ampmodel.cost.compute_cost`, the numbers every trial logs: MACs per output sample and
the real-time factor of streaming at one thread, with the knobs at a fixed setting. There every
method folds into the layers' weights and biases (FiLM's knob network runs once, concat's constant
knob channels become biases), so MACs per sample do not change; what conditioning costs is
parameters (memory, training), and the RTF ratios show the timing's noise. Whether a conditioned model follows the knobs at
settings it never saw is another question, measured at equal compute by
benchmarks/knob_generalisation.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from ampmodel.config import CONDITIONINGS, NAM_CONDITIONINGS, PRESETS  # noqa: E402
from ampmodel.cost import compute_cost  # noqa: E402
from ampmodel.loading import build_wavenet  # noqa: E402

FS = 44100


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="WaveNet1,WaveNet2,WaveNet3,nam-standard")
    parser.add_argument("--smoke", action="store_true", help="nam-nano only, nothing written")
    args = parser.parse_args(argv)
    presets = ["nam-nano"] if args.smoke else args.presets.split(",")
    lines = [f"Cost of knob conditioning at {FS} Hz (`ampmodel.cost.compute_cost`, as every trial logs it): "
             "parameters, MACs per output sample and streaming real-time factor at one thread, knobs at a fixed "
             "setting; ratios to the same preset without conditioning.", "",
             "| preset | conditioning | params | MACs/sample | RTF | MACs ratio | RTF ratio |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for preset in presets:
        cfg = PRESETS[preset]
        methods = NAM_CONDITIONINGS if cfg.family == "nam" else CONDITIONINGS
        base = None
        for method in methods:
            cost = compute_cost(build_wavenet(dataclasses.replace(cfg, conditioning=method)), fs=FS)
            base = base or cost
            row = (f"| {preset} | {method} | {cost['params']:,} | {cost['macs_per_sample']:,.0f} | {cost['rtf']:.1f} | "
                   f"{cost['macs_per_sample'] / base['macs_per_sample']:.3f} | {cost['rtf'] / base['rtf']:.3f} |")
            lines.append(row)
            print(row, flush=True)
    if not args.smoke:
        from benchmarks.results_file import write_results

        print(f"written to {write_results('conditioning', chr(10).join(lines) + chr(10))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
