"""How fast is the ngspice Bassman, and what do chunking and the step size cost in accuracy?

Prints (for a plucked-string test signal at 44.1 kHz):
  1. real-time factor (audio seconds per wall second): one serial run vs parallel chunks;
  2. max_step_fraction 0.25 vs 0.5: speed and error against a fine-step reference;
  3. chunked vs one run: max error for several warm-up lengths.

    .venv/bin/python benchmarks/spice_speed.py [--seconds 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

from datamodules.config import PotSettings
from datamodules.spice import ngspice_version, simulate

FS = 44100
POTS = PotSettings(volume=0.8)  # well into V2A clipping: the hard case for the solver


def plucked_strings(seconds: float, fs: int = FS, peak_volts: float = 1.0) -> np.ndarray:
    """Guitar-like test signal: decaying harmonic notes (E2..E4), a new one every 0.37 s."""
    n = int(seconds * fs)
    t = np.arange(n) / fs
    x = np.zeros(n)
    notes = (82.4, 110.0, 146.8, 196.0, 246.9, 329.6)
    for k, start in enumerate(np.arange(0.0, seconds, 0.37)):
        on = t >= start
        tt = t[on] - start
        f0 = notes[k % len(notes)]
        tone = sum(np.sin(2 * np.pi * h * f0 * tt) * np.exp(-tt * (2 + h)) / h for h in range(1, 9))
        x[on] += tone
    return peak_volts * x / np.abs(x).max()


def _child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(x: np.ndarray, **kwargs) -> tuple[np.ndarray, float]:
    """Output and wall seconds; the ngspice CPU seconds of the last call are in timed.cpu."""
    start, cpu = time.perf_counter(), _child_cpu_seconds()
    y = simulate(x, FS, POTS, **kwargs)
    timed.cpu = _child_cpu_seconds() - cpu
    return y, time.perf_counter() - start


def error_db(y: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max abs error re reference peak, error energy re reference energy), both in dB."""
    err = y - ref
    peak = 20 * np.log10(np.abs(err).max() / np.abs(ref).max() + 1e-300)
    energy = 10 * np.log10(np.sum(err**2) / np.sum(ref**2) + 1e-300)
    return peak, energy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--accuracy-seconds", type=float, default=2.0)
    args = parser.parse_args()
    print(f"{ngspice_version()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"fs {FS} Hz, knobs {POTS.label()}")

    x = plucked_strings(args.seconds)
    serial, t_serial = timed(x, workers=1, chunk_seconds=args.seconds + 1)
    cpu_serial = timed.cpu
    chunked, t_par = timed(x, workers=args.workers, chunk_seconds=2.0, warmup_seconds=0.5)
    cpu_par = timed.cpu
    print(f"\n1. real-time factor on {args.seconds:g} s (audio s per wall s, max_step_fraction 0.25)")
    print(f"   {'serial (1 run)':<28}{'parallel (2 s chunks)':<28}speedup")
    print(f"   {args.seconds / t_serial:<28.3f}{args.seconds / t_par:<28.3f}{t_serial / t_par:.2f}x"
          f"   [{t_serial:.1f} s vs {t_par:.1f} s wall, {args.workers} workers]")
    # Wall times suffer from whatever else runs on the machine; ngspice CPU time does not.
    print(f"   ngspice CPU s per audio s: serial {cpu_serial / args.seconds:.2f}, chunked "
          f"{cpu_par / args.seconds:.2f} (warm-up overhead {cpu_par / cpu_serial - 1:+.0%}); "
          f"speedup bound with {args.workers} free cores: "
          f"{cpu_serial / cpu_par * args.workers:.2f}x")
    peak, energy = error_db(chunked, serial)
    print(f"   chunked vs serial: max error {peak:.1f} dB re peak, error energy {energy:.1f} dB")

    xa = x[: int(args.accuracy_seconds * FS)]
    ref, t_ref = timed(xa, workers=1, chunk_seconds=100, max_step_fraction=1 / 16)
    print(f"\n2. max_step_fraction on {args.accuracy_seconds:g} s, reference = 1/16 "
          f"({args.accuracy_seconds / t_ref:.3f}x real time)")
    print(f"   {'fraction':<10}{'RTF':<10}{'max err dB':<14}{'err energy dB':<14}")
    for fraction in (0.25, 0.5):
        y, t = timed(xa, workers=1, chunk_seconds=100, max_step_fraction=fraction)
        peak, energy = error_db(y, ref)
        print(f"   {fraction:<10g}{args.accuracy_seconds / t:<10.3f}{peak:<14.1f}{energy:<14.1f}")

    print(f"\n3. chunked (1 s chunks) vs one run on {args.accuracy_seconds * 2:g} s: warm-up needed")
    xw = x[: int(2 * args.accuracy_seconds * FS)]
    whole, _ = timed(xw, workers=1, chunk_seconds=100)
    print(f"   {'warmup s':<10}{'max err dB':<14}{'err energy dB':<14}")
    for warmup in (0.0, 0.05, 0.1, 0.25, 0.5, 1.0):
        y, _ = timed(xw, workers=args.workers, chunk_seconds=1.0, warmup_seconds=warmup)
        peak, energy = error_db(y, whole)
        print(f"   {warmup:<10g}{peak:<14.1f}{energy:<14.1f}")


if __name__ == "__main__":
    main()
