"""Is the simulated Bassman plausible? DC voltages, 1 kHz gain and THD from the real netlist.

Prints:
  1. rest (DC) voltages of each stage next to the values quoted for the 5F6-A drawing;
  2. small-signal gain at 1 kHz (input jack to tone-stack output) for volume 0.5 and 1.0;
  3. THD at 1 kHz for 0.1 / 1 / 3 V peak input at volume 0.5 and 1.0 (tone knobs at 0.5).

Reference DC values: Fender's 5F6-A drawing annotates tube-pin voltages; the numbers below are
the ones commonly quoted from it (V1 plate ~160 V, V2A plate ~180 V, V2B cathode ~185 V, with
the 325 V preamp supply that R. Kuehnel's 5F6-A analysis on ampbooks.com uses). The drawing
itself could not be retrieved while writing this, so treat them as approximate; real amps
measure within about +-20 % of the drawing anyway.

    .venv/bin/python benchmarks/spice_sanity.py
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from datamodules.config import PotSettings
from datamodules.netlist import STAGE_NODES
from datamodules.spice import ngspice_version, operating_point
from datamodules.spice_pool import simulate

FS = 44100
F0 = 1000.0
SETTLE_SECONDS = 0.5  # lets the 250 uF cathode bypass settle to the signal's new bias
ANALYSIS_SECONDS = 0.1  # exactly 100 cycles of 1 kHz at 44.1 kHz: harmonics fall on FFT bins
SCHEMATIC_DC = {"p1n": 160.0, "p2a": 180.0, "k2b": 185.0}


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


def main() -> None:
    print(f"{ngspice_version()}, fs {FS} Hz")
    op = operating_point(PotSettings())
    print("\n1. DC operating point (zero input, knobs at 0.5; B+ = "
          f"{op['bplus']:.0f} V)")
    print(f"   {'stage':<11}{'plate V':>9}{'cathode V':>11}   vs 5F6-A drawing (approx.)")
    for stage, (plate, cathode) in STAGE_NODES.items():
        ref = [f"{n} {op[n]:.0f} vs {SCHEMATIC_DC[n]:.0f} ({op[n] / SCHEMATIC_DC[n] - 1:+.0%})"
               for n in (plate, cathode) if n in SCHEMATIC_DC]
        print(f"   {stage:<11}{op[plate]:>9.1f}{op[cathode]:>11.2f}   {'; '.join(ref)}")

    jobs = [(0.01, v) for v in (0.5, 1.0)] + [(a, v) for v in (0.5, 1.0) for a in (0.1, 1.0, 3.0)]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(jobs, pool.map(lambda job: harmonics(tone_response(*job)), jobs)))
    print(f"\n   ({len(jobs)} tone runs in {time.perf_counter() - start:.0f} s)")

    print("\n2. small-signal gain at 1 kHz (10 mV peak in; treble/bass/middle 0.5)")
    for volume in (0.5, 1.0):
        gain = results[(0.01, volume)][0] / 0.01
        print(f"   volume {volume:<4g} gain {20 * np.log10(gain):6.1f} dB  ({gain:.1f} x)")

    print("\n3. THD at 1 kHz (harmonics 2..10 re fundamental)")
    print(f"   {'volume':<8}{'in V peak':<11}{'out V peak':<12}{'THD %':<9}H2 dB   H3 dB")
    for volume in (0.5, 1.0):
        for amp in (0.1, 1.0, 3.0):
            h = results[(amp, volume)]
            thd = np.sqrt(np.sum(h[1:] ** 2)) / h[0]
            rel = 20 * np.log10(h[1:3] / h[0])
            print(f"   {volume:<8g}{amp:<11g}{h[0]:<12.2f}{100 * thd:<9.2f}"
                  f"{rel[0]:<8.1f}{rel[1]:.1f}")


if __name__ == "__main__":
    main()
