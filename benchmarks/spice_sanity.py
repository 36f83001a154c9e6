"""Is the simulated Bassman plausible? DC voltages, 1 kHz gain and THD from the real netlist.

Prints (as Markdown tables) and writes to benchmarks/results/spice_sanity.md:
  1. rest (DC) voltages of each stage next to the values quoted for the 5F6-A drawing;
  2. small-signal gain at 1 kHz (input jack to tone-stack output) for volume 0.5 and 1.0;
  3. THD at 1 kHz for 0.1 / 1 / 3 V peak input at volume 0.5 and 1.0 (tone knobs at 0.5).

Reference DC values: Fender's 5F6-A drawing annotates tube-pin voltages; the numbers below are
the ones commonly quoted from it (V1 plate ~160 V, V2A plate ~180 V, V2B cathode ~185 V, with
the 325 V preamp supply that R. Kuehnel's 5F6-A analysis on ampbooks.com uses). The drawing
itself could not be retrieved while writing this, so treat them as approximate; real amps
measure within about +-20 % of the drawing anyway.

    .venv/bin/python benchmarks/spice_sanity.py            # writes benchmarks/results/spice_sanity.md
    .venv/bin/python benchmarks/spice_sanity.py --smoke    # seconds, nothing written

`--smoke` runs the same real ngspice simulations for volume 1.0 only and one THD level (1 V peak):
it checks that the script runs and writes nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from benchmarks.results_file import publish  # noqa: E402  (notes the commit the run starts on)
from datamodules.config import PotSettings  # noqa: E402
from datamodules.netlist import STAGE_NODES  # noqa: E402
from datamodules.spice import ngspice_version, operating_point  # noqa: E402
from datamodules.spice import simulate  # noqa: E402

FS = 44100
F0 = 1000.0
SETTLE_SECONDS = 0.5  # lets the 250 uF cathode bypass settle to the signal's new bias
ANALYSIS_SECONDS = 0.1  # exactly 100 cycles of 1 kHz at 44.1 kHz: harmonics fall on FFT bins
SCHEMATIC_DC = {"p1n": 160.0, "p2a": 180.0, "k2b": 185.0}
SMALL_SIGNAL_VOLTS = 0.01
VOLUMES = (0.5, 1.0)
THD_VOLTS = (0.1, 1.0, 3.0)


def tone_response(peak_volts: float, volume: float) -> np.ndarray:
    """Steady-state output over ANALYSIS_SECONDS for a 1 kHz sine of `peak_volts` at the input."""
    n = int((SETTLE_SECONDS + ANALYSIS_SECONDS) * FS)
    x = peak_volts * np.sin(2 * np.pi * F0 * np.arange(n) / FS)
    y = simulate(x, FS, PotSettings(volume=volume), workers=1, chunk_seconds=10.0)
    return y[-int(ANALYSIS_SECONDS * FS):]


def harmonics(y: np.ndarray, count: int = 10) -> np.ndarray:
    """Amplitudes (volts peak) of the fundamental and its harmonics 2..count."""
    spectrum = np.abs(np.fft.rfft(y)) * 2 / len(y)
    bin0 = round(F0 * len(y) / FS)
    return np.array([spectrum[k * bin0] for k in range(1, count + 1)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="volume 1.0 and 1 V peak only, nothing written")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/results/ alone")
    args = parser.parse_args(argv)
    volumes, levels = ((1.0,), (1.0,)) if args.smoke else (VOLUMES, THD_VOLTS)

    op = operating_point(PotSettings())
    lines = [f"{ngspice_version()}, fs {FS} Hz, tone knobs (treble/bass/middle) at 0.5.", "",
             f"1. DC operating point (zero input, knobs at 0.5; B+ = {op['bplus']:.0f} V)", "",
             "| stage | plate V | cathode V | vs 5F6-A drawing (approx.) |", "| --- | --- | --- | --- |"]
    for stage, (plate, cathode) in STAGE_NODES.items():
        ref = [f"{n} {op[n]:.0f} vs {SCHEMATIC_DC[n]:.0f} ({op[n] / SCHEMATIC_DC[n] - 1:+.0%})"
               for n in (plate, cathode) if n in SCHEMATIC_DC]
        lines.append(f"| {stage} | {op[plate]:.1f} | {op[cathode]:.2f} | {'; '.join(ref) or '-'} |")

    jobs = [(SMALL_SIGNAL_VOLTS, v) for v in volumes] + [(a, v) for v in volumes for a in levels]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(jobs, pool.map(lambda job: harmonics(tone_response(*job)), jobs)))
    print(f"({len(jobs)} tone runs of {SETTLE_SECONDS + ANALYSIS_SECONDS:g} s in {time.perf_counter() - start:.1f} s)")

    lines += ["", f"2. small-signal gain at 1 kHz ({SMALL_SIGNAL_VOLTS * 1000:g} mV peak in)", "",
              "| volume | gain dB | gain x |", "| --- | --- | --- |"]
    for volume in volumes:
        gain = results[(SMALL_SIGNAL_VOLTS, volume)][0] / SMALL_SIGNAL_VOLTS
        lines.append(f"| {volume:g} | {20 * np.log10(gain):.1f} | {gain:.1f} |")

    lines += ["", "3. THD at 1 kHz (harmonics 2..10 re fundamental)", "",
              "| volume | in V peak | out V peak | THD % | H2 dB | H3 dB |", "| --- | --- | --- | --- | --- | --- |"]
    for volume in volumes:
        for amp in levels:
            h = results[(amp, volume)]
            thd = np.sqrt(np.sum(h[1:] ** 2)) / h[0]
            rel = 20 * np.log10(h[1:3] / h[0])
            lines.append(f"| {volume:g} | {amp:g} | {h[0]:.2f} | {100 * thd:.2f} | {rel[0]:.1f} | {rel[1]:.1f} |")
    text = "\n".join(lines)
    publish("spice_sanity", text, write=not args.no_write and not args.smoke, argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
