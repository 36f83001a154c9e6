"""How fast is the ngspice Bassman, and what do chunking and the step size cost in accuracy?

Sections (all by default; `--sections` picks some); each prints a Markdown table and writes it to its
own results file, so running one section leaves the others' files alone:
  rtf      real-time factor (audio s per wall s) of one plucked-string signal: one serial run vs
           parallel chunks, with ngspice CPU time (robust to other load on the machine);
           benchmarks/results/spice_speed_rtf.md;
  step     max_step_fraction 0.25 vs 0.5: speed and error against a fine-step reference;
           benchmarks/results/spice_speed_step.md;
  warmup   chunked vs one run: max error for several warm-up lengths, at several knob settings
           (hard clipping, bass/middle up with low treble, low volume);
           benchmarks/results/spice_speed_warmup.md;
  aliasing the oversampled, band-limited chain (datamodules/resampling.py) for the oversampling K
           and solver step of each of `--chains`, at three knob settings (volume 1, the most
           distorted, 0.5 and 0.15): alias-to-signal ratio of pure tones (energy at non-harmonic
           frequencies re the output's energy, dB), error of the datasets' DI against the last
           chain (dB re its energy), ngspice CPU and wall time; benchmarks/results/spice_aliasing.md;
  dataset  a knob-design dataset built as `ampstudy data` builds it (`--design-settings` x
           `--design-seconds` of synthetic DI, the default chunking), through one pool of `--workers`
           ngspice processes at each oversampling of `--dataset-oversamplings`, vs serially (one
           process per setting, no chunks, K = 1): speedup, audio s per wall s, CPU seconds of
           ngspice and of the parent process; benchmarks/results/spice_speed_dataset.md.

    .venv/bin/python benchmarks/spice_speed.py [--sections dataset] [--workers 0 (= all cores)]
    .venv/bin/python benchmarks/spice_speed.py --smoke      # seconds, nothing written

`--smoke` runs every chosen section on a fraction of a second of audio through real ngspice (shorter
chunks, tone windows and warm-ups; one knob setting for warmup and aliasing, two chains, one tone;
8 design settings of a few hundredths of a second): it checks that the script runs, measures
nothing and writes nothing.
`--no-write` runs the chosen sections in full and only prints.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from benchmarks.results_file import write_results  # noqa: E402  (notes the commit the run starts on)
from datamodules.config import DataConfig, KnobsConfig, PotSettings, SimulationConfig  # noqa: E402
from datamodules.spice import SpiceJob, available_cores, ngspice_version, simulate, simulate_many  # noqa: E402

RESULTS_NAMES = {"rtf": "spice_speed_rtf", "step": "spice_speed_step", "warmup": "spice_speed_warmup",
                 "aliasing": "spice_aliasing", "dataset": "spice_speed_dataset"}  # benchmarks/results/<name>.md

FS = 44100
POTS = PotSettings(volume=0.8)  # well into V2A clipping: the hard case for the solver
WARMUP_POTS = (POTS, PotSettings(volume=0.5, treble=0.0, bass=1.0, middle=1.0), PotSettings(volume=0.15))
SECTIONS = ("rtf", "step", "warmup", "aliasing", "dataset")
ALIAS_POTS = (PotSettings(volume=1.0), PotSettings(volume=0.5), PotSettings(volume=0.15))
TONE_SETTLE_SECONDS = 0.25  # the tone's onset and the circuit's settling, left out of the spectrum
TONE_WINDOW_SECONDS = 0.5  # analysed: 2 Hz bins, every tone (whole Hz) and harmonic on a bin
HARMONIC_HALF_WIDTH_HZ = 12.0  # around each harmonic: the window's main lobe and solver jitter


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


class Timed:
    """Wall seconds, ngspice (children) CPU seconds and this process's CPU seconds of a block."""

    def __enter__(self) -> "Timed":
        self._wall, self._child, self._own = time.perf_counter(), _child_cpu_seconds(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = _child_cpu_seconds() - self._child
        self.own = time.process_time() - self._own


def timed(x: np.ndarray, pots: PotSettings = POTS, **kwargs) -> tuple[np.ndarray, Timed]:
    with Timed() as t:
        y = simulate(x, FS, pots, **kwargs)
    return y, t


def error_db(y: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max abs error re reference peak, error energy re reference energy), both in dB."""
    err = y - ref
    peak = 20 * np.log10(np.abs(err).max() / np.abs(ref).max() + 1e-300)
    energy = 10 * np.log10(np.sum(err**2) / np.sum(ref**2) + 1e-300)
    return peak, energy


def emit(lines: list[str], *rows: str) -> None:
    """Append rows to a section's Markdown and print them as they come (long sections show progress)."""
    lines.extend(rows)
    print("\n".join(rows), flush=True)


def rtf_section(args) -> list[str]:
    x = plucked_strings(args.seconds)
    chunk = args.rtf_chunk_seconds
    serial, t_serial = timed(x, workers=1, chunk_seconds=args.seconds + 1)
    chunked, t_par = timed(x, workers=args.workers, chunk_seconds=chunk, warmup_seconds=args.warmup)
    peak, energy = error_db(chunked, serial)
    lines: list[str] = []
    emit(lines, f"Real-time factor (audio s per wall s) of {args.seconds:g} s of plucked strings at {POTS.label()}, "
                f"max_step_fraction 0.25: one ngspice run vs {chunk:g} s chunks (warm-up {args.warmup:g} s) through "
                f"{args.workers} ngspice processes.", "",
         "| run | wall s | audio s per wall s | ngspice CPU s per audio s |", "| --- | --- | --- | --- |",
         f"| serial (1 run) | {t_serial.wall:.2f} | {args.seconds / t_serial.wall:.3f} | "
         f"{t_serial.cpu / args.seconds:.2f} |",
         f"| parallel ({chunk:g} s chunks) | {t_par.wall:.2f} | {args.seconds / t_par.wall:.3f} | "
         f"{t_par.cpu / args.seconds:.2f} |", "",
         f"- speedup: {t_serial.wall / t_par.wall:.2f}x; warm-up overhead in ngspice CPU "
         f"{t_par.cpu / t_serial.cpu - 1:+.0%}; speedup bound with {args.workers} free cores: "
         f"{t_serial.cpu / t_par.cpu * args.workers:.2f}x",
         f"- chunked vs serial: max error {peak:.1f} dB re peak, error energy {energy:.1f} dB")
    return lines


def step_section(args) -> list[str]:
    xa = plucked_strings(args.accuracy_seconds)
    ref, t_ref = timed(xa, workers=1, chunk_seconds=100, max_step_fraction=1 / 16)
    lines: list[str] = []
    emit(lines, f"max_step_fraction (the solver's largest step, a fraction of a sample at {FS} Hz) on "
                f"{args.accuracy_seconds:g} s of plucked strings at {POTS.label()}, one ngspice run each; "
                "errors re the 1/16 run.", "",
         "| max_step_fraction | audio s per wall s | max error dB re peak | error energy dB |",
         "| --- | --- | --- | --- |",
         f"| 1/16 (reference) | {args.accuracy_seconds / t_ref.wall:.3f} | - | - |")
    for fraction in (0.25, 0.5):
        y, t = timed(xa, workers=1, chunk_seconds=100, max_step_fraction=fraction)
        peak, energy = error_db(y, ref)
        emit(lines, f"| {fraction:g} | {args.accuracy_seconds / t.wall:.3f} | {peak:.1f} | {energy:.1f} |")
    return lines


def warmup_section(args) -> list[str]:
    seconds = 2 * args.accuracy_seconds
    chunk = args.warmup_chunk_seconds
    xw = plucked_strings(seconds)
    warmups = [float(w) for w in args.warmups.split(",")]
    lines: list[str] = []
    emit(lines, f"Chunked ({chunk:g} s chunks, {args.workers} ngspice processes) vs one run on {seconds:g} s of "
                "plucked strings: max error dB re peak (error energy dB re signal energy), per knob setting.", "",
         "| warm-up s | " + " | ".join(p.label() for p in args.warmup_pots) + " |",
         "| --- |" + " --- |" * len(args.warmup_pots))
    wholes = [timed(xw, pots, workers=1, chunk_seconds=100)[0] for pots in args.warmup_pots]
    for warmup in warmups:
        cells = []
        for pots, whole in zip(args.warmup_pots, wholes):
            y, _ = timed(xw, pots, workers=args.workers, chunk_seconds=chunk, warmup_seconds=warmup)
            peak, energy = error_db(y, whole)
            cells.append(f"{peak:.1f} ({energy:.1f})")
        emit(lines, f"| {warmup:g} | " + " | ".join(cells) + " |")
    return lines


def tone(freq_hz: float, peak_volts: float, fs: int = FS, settle_seconds: float = TONE_SETTLE_SECONDS,
         window_seconds: float = TONE_WINDOW_SECONDS) -> np.ndarray:
    """A pure tone with a raised-cosine onset (20 ms, or less for a short tone), long enough to settle and
    be analysed."""
    n = int((settle_seconds + window_seconds) * fs)
    x = peak_volts * np.sin(2 * np.pi * freq_hz * np.arange(n) / fs)
    ramp = int(min(0.02, settle_seconds / 2) * fs)
    x[:ramp] *= 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    return x


def alias_to_signal_db(y: np.ndarray, freq_hz: float, fs: int = FS,
                       window_seconds: float = TONE_WINDOW_SECONDS) -> float:
    """Energy of the tone response at frequencies that are not harmonics of the tone, re all its energy.

    A nonlinearity driven by a pure tone makes only harmonics (k x f); everything else in the band
    is aliasing (folded harmonics above fs/2), plus the solver's noise floor. A 4-term
    Blackman-Harris window (side lobes -92 dB) over the settled part; DC and +-12 Hz around every
    in-band harmonic are left out of the numerator."""
    segment = y[-int(window_seconds * fs):]
    segment = segment - segment.mean()
    power = np.abs(np.fft.rfft(segment * signal_window(len(segment)))) ** 2
    freqs = np.fft.rfftfreq(len(segment), 1 / fs)
    harmonic = np.zeros(len(freqs), dtype=bool)
    for k in range(0, int(fs / 2 // freq_hz) + 1):
        harmonic |= np.abs(freqs - k * freq_hz) <= HARMONIC_HALF_WIDTH_HZ
    return float(10 * np.log10(power[~harmonic].sum() / power.sum() + 1e-300))


def signal_window(n: int) -> np.ndarray:
    from scipy.signal import windows

    return windows.blackmanharris(n)


def parse_chains(text: str) -> list[tuple[int, float]]:
    """'1:0.25,4:0.25,16:0.0625' -> [(K, max_step_fraction), ...]."""
    chains = []
    for item in text.split(","):
        k, _, step = item.partition(":")
        chains.append((int(k), float(step) if step else SimulationConfig.max_step_fraction))
    return chains


def aliasing_section(args) -> list[str]:
    from datamodules.corpus import synth_corpus

    chains = parse_chains(args.chains)
    reference = chains[-1]
    tones = [float(f) for f in args.tones.split(",")]
    settle, window = args.tone_settle_seconds, args.tone_window_seconds
    # the datasets' DI at 1 V full scale, from 1 s in (its first notes fade in from silence)
    di = synth_corpus(args.accuracy_seconds + 1, FS, 0)[FS:].astype(np.float64)
    signals = [tone(f, args.tone_volts, settle_seconds=settle, window_seconds=window) for f in tones] + [di]
    lines: list[str] = []
    emit(lines, f"Pure tones of {args.tone_volts:g} V peak at the input ({', '.join(f'{f:g}' for f in tones)} Hz; "
                f"{settle:g} s to settle, {window:g} s analysed) and {args.accuracy_seconds:g} s of the datasets' "
                f"synthetic DI (seed 0, 1 V full scale), at fs = {FS} Hz; each (knobs, chain) row is one pool of "
                f"{args.workers} ngspice processes ({ngspice_version()}).",
         "", "- K: oversampling; step: the solver's largest step as a fraction of a sample at fs",
         "- alias dB: energy at non-harmonic frequencies of each tone's output re its energy (aliasing, and the "
         "solver's error where that is larger)",
         f"- DI error dB: the DI's output vs K = {reference[0]}, step {reference[1]:g}: error energy re signal "
         "energy", "- ngspice CPU s: all signals of the row; x first: that over the first chain's", "",
         "| knobs | K | step | " + " | ".join(f"alias dB {f / 1000:g} kHz" for f in tones)
         + " | worst alias dB | DI error dB | ngspice CPU s | x first | parent CPU s | wall s |",
         "|---" * (len(tones) + 9) + "|")
    for pots in args.alias_pots:
        jobs = [SpiceJob(x, pots) for x in signals]
        outputs, cost = {}, {}
        for chain in [reference] + chains[:-1]:
            k, step = chain
            with Timed() as t:
                outputs[chain] = simulate_many(jobs, FS, oversampling=k, max_step_fraction=step,
                                               workers=args.workers, chunk_seconds=1.0)
            cost[chain] = t
        for chain in chains:
            alias = [alias_to_signal_db(y, f, window_seconds=window) for y, f in zip(outputs[chain], tones)]
            in_band = "(reference)" if chain == reference else \
                f"{error_db(outputs[chain][-1], outputs[reference][-1])[1]:.1f}"
            t = cost[chain]
            emit(lines, f"| {pots.label()} | {chain[0]} | {chain[1]:g} | " + " | ".join(f"{a:.1f}" for a in alias)
                 + f" | {max(alias):.1f} | {in_band} | {t.cpu:.1f} | {t.cpu / cost[chains[0]].cpu:.2f}"
                 + f" | {t.own:.1f} | {t.wall:.1f} |")
    return lines


def dataset_section(args) -> list[str]:
    from types import SimpleNamespace

    from datamodules.dataset import spice_jobs
    from datamodules.dataset_plan import build_inputs, plan_dataset

    cfg = DataConfig(data_dir="/nonexistent", knobs=KnobsConfig(settings=(), design_settings=args.design_settings,
                                                                design_seconds=args.design_seconds,
                                                                sweep_test_settings=False, response_points=0))
    plan = plan_dataset(cfg)
    jobs = spice_jobs(plan, SimpleNamespace(inputs=build_inputs(cfg, plan.settings)[0]))  # the DI each setting plays
    audio = sum(len(j.x_volts) for j in jobs) / FS
    warmups = [float(w) for w in args.dataset_warmups.split(",")] if args.dataset_warmups else [args.warmup]
    factors = [int(k) for k in args.dataset_oversamplings.split(",")]
    lines: list[str] = []
    emit(lines, f"{len(jobs)} design settings x {args.design_seconds:g} s = {audio:g} s of synthetic DI, chunks of "
                f"{cfg.simulation.chunk_seconds:g} s, {args.workers} ngspice processes in the pool; serial: one ngspice run per "
                "setting, no chunks, K 1. Speedup: the serial row's wall time over the row's; bound: serial ngspice "
                "CPU s / (pool ngspice + parent CPU s) x processes, the speedup with every core free; x first pool: "
                "wall time over the first pool row's.", "",
         "| run | wall s | audio s per wall s | ngspice CPU s | parent CPU s | speedup | bound | x first pool |",
         "| --- | --- | --- | --- | --- | --- | --- | --- |")
    serial = None
    if not args.no_serial:
        with Timed() as serial:
            simulate_many(jobs, FS, workers=1, chunk_seconds=args.design_seconds + 1)
        emit(lines, f"| serial, 1 run/setting, K 1 | {serial.wall:.1f} | {audio / serial.wall:.3f} | {serial.cpu:.1f} "
                    f"| {serial.own:.1f} | 1.00x | - | - |")
    first = None
    for k in factors:
        for warmup in warmups:
            with Timed() as parallel:
                simulate_many(jobs, FS, oversampling=k, workers=args.workers, chunk_seconds=cfg.simulation.chunk_seconds,
                              warmup_seconds=warmup)
            first = first or parallel
            speedup, bound = ("-", "-") if serial is None else (
                f"{serial.wall / parallel.wall:.2f}x",
                f"{serial.cpu / (parallel.cpu + parallel.own) * args.workers:.2f}x")
            emit(lines, f"| pool, warm-up {warmup:g} s, K {k} | {parallel.wall:.1f} | {audio / parallel.wall:.3f} | "
                        f"{parallel.cpu:.1f} | {parallel.own:.1f} | {speedup} | {bound} | "
                        f"{parallel.wall / first.wall:.2f}x |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"some of {', '.join(SECTIONS)}")
    parser.add_argument("--seconds", type=float, default=8.0, help="rtf: signal length")
    parser.add_argument("--rtf-chunk-seconds", type=float, default=2.0, help="rtf: chunk length of the parallel run")
    parser.add_argument("--workers", type=int, default=0, help="parallel ngspice processes (0 = all cores)")
    parser.add_argument("--warmup", type=float, default=SimulationConfig.warmup_seconds,
                        help="rtf, dataset: warm-up seconds (default: DataConfig's)")
    parser.add_argument("--accuracy-seconds", type=float, default=2.0,
                        help="step, aliasing (DI): signal length; warmup: twice it")
    parser.add_argument("--warmups", default="0,0.05,0.1,0.15,0.2,0.25,0.5,1.0", help="warmup: lengths tried")
    parser.add_argument("--warmup-chunk-seconds", type=float, default=1.0, help="warmup: chunk length")
    parser.add_argument("--chains", default="1:0.25,2:0.25,4:0.25,8:0.25,16:0.25,8:0.0625,16:0.0625",
                        help="aliasing: K:max_step_fraction pairs; the last is the reference")
    parser.add_argument("--tones", default="3000,5000,7000", help="aliasing: tone frequencies, whole Hz")
    parser.add_argument("--tone-volts", type=float, default=0.5, help="aliasing: tone peak at the amp's input")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/results/ alone")
    parser.add_argument("--design-settings", type=int, default=8)
    parser.add_argument("--design-seconds", type=float, default=6.0)
    parser.add_argument("--dataset-oversamplings", default="1", help="dataset: K values to build, e.g. 1,8,16")
    parser.add_argument("--no-serial", action="store_true", help="dataset: skip the serial (one run per setting) row")
    parser.add_argument("--dataset-warmups", default="", help="dataset: warm-ups to compare, e.g. 0.5,0.2 "
                                                              "(default: --warmup)")
    parser.add_argument("--smoke", action="store_true",
                        help="every chosen section on a fraction of a second of audio; nothing written")
    args = parser.parse_args(argv)
    args.workers = args.workers or available_cores()
    args.warmup_pots, args.alias_pots = WARMUP_POTS, ALIAS_POTS
    args.tone_settle_seconds, args.tone_window_seconds = TONE_SETTLE_SECONDS, TONE_WINDOW_SECONDS
    if args.smoke:  # short signals, chunks and tone windows (20 Hz bins: whole-kHz tones stay on bins)
        args.seconds, args.rtf_chunk_seconds, args.warmup = 0.1, 0.05, 0.02
        args.accuracy_seconds, args.warmups, args.warmup_chunk_seconds = 0.03, "0.02", 0.03
        args.chains, args.tones = "1:0.25,2:0.25", "3000"
        args.tone_settle_seconds, args.tone_window_seconds = 0.01, 0.05
        args.warmup_pots, args.alias_pots = WARMUP_POTS[:1], ALIAS_POTS[:1]
        args.design_settings, args.design_seconds, args.dataset_oversamplings, args.dataset_warmups = 8, 0.05, "1", ""
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    context = (f"{ngspice_version()}, {os.cpu_count()} CPUs ({available_cores()} available), load average "
               f"{os.getloadavg()[0]:.2f} at the start of the run, fs {FS} Hz")
    print(context + (" (SMOKE RUN: measures nothing)" if args.smoke else ""))
    for section in chosen:
        print(f"\n{section}:", flush=True)
        lines = globals()[f"{section}_section"](args)
        if not args.no_write and not args.smoke:
            path = write_results(RESULTS_NAMES[section], "\n".join([context + ".", ""] + lines), argv)
            print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
