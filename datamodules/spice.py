"""Run the Bassman 5F6-A netlist in ngspice: audio in (volts), tone-stack output (volts) out.

`simulate(x, fs, pots)` for one signal, `simulate_many(jobs, fs)` for many (signal, knob setting)
jobs: every chunk of every job goes through one pool of ngspice processes, longest first, so all
cores stay busy until the end, and finished chunks are kept in a resumable, sha256-checked cache.

How a run works (why it is done this way):
- The input goes in through the XSPICE `filesource` model reading a (time, value) text file;
  an inline PWL source with one point per sample makes ngspice O(N^2) in the audio's length.
- `.tran 1/fs T 0 tmax` with tmax = max_step_fraction/fs (fs: the simulated rate, K x the dataset's
  rate when oversampled: datamodules/resampling.py) keeps the solver's steps well inside a
  sample; in `.control`, `linearize` resamples the output exactly onto the grid n/fs and `wrdata`
  writes it. ngspice `-b` with a `.control` block must end in `quit 0`, so its exit code says
  nothing: success is judged by the rows read back (count, time grid, finite values).
- Long audio is cut into chunks of `chunk_seconds`, each run in its own ngspice process with
  `warmup_seconds` of the preceding audio simulated first and thrown away. Each chunk starts
  from the circuit's DC operating point at zero input (the warm-up is faded in from silence), so
  the warm-up only has to let the slow parts of the state (the 250 uF cathode bypass, coupling
  and tone-stack capacitors) catch up with the signal history. Without a warm-up the joins are
  audible; with 0.2 s (the default) chunked and one-run output agree to ngspice's own noise floor
  at a hard-clipping, a slow-settling (bass and middle up) and a quiet setting, and longer
  warm-ups only add simulation: benchmarks/results/spice_speed_warmup.md. The first chunk, like a
  single run, starts from the operating point at input x[0].
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules import resampling
from datamodules.config import PotSettings
from datamodules.netlist import OUTPUT_NODE, STAGE_NODES, render_netlist
from foundation.errors import AmpStudyError
from foundation.files import write_atomically

INSTALL_HINT = "install it: sudo apt-get install ngspice"
FADE_IN_SECONDS = 0.01  # raised-cosine fade at the start of each chunk's warm-up
# ngspice's last time step is not reliable (the final sample can be far off), so every
# run goes this many samples past what is kept; past the end of the audio the input is held.
TAIL_SAMPLES = 32
LOG_TAIL_LINES = 12
# Plate voltage of a gain stage at rest, as a fraction of B+: outside this band the stage is
# cut off (plate near B+) or saturated (plate near the cathode), i.e. the netlist is wrong.
PLATE_BAND = (0.25, 0.85)
B_PLUS_NODE = "bplus"
# reltol 1e-4 (ngspice default 1e-3): chunks and one run agree more closely (the solver's error is
# what the warm-up cannot remove), for a little more run time.
SOLVER_OPTIONS = ".options reltol=1e-4"
CHUNK_CACHE_VERSION = 1  # bump when a chunk's simulation changes meaning


class SpiceError(AmpStudyError):
    """ngspice is missing, failed, or produced unusable output; the message names the fix."""


def available_cores() -> int:
    """Cores this process may run on (a container's or taskset's limit, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def ngspice_path() -> str:
    """Absolute path of the ngspice executable, or SpiceError telling how to install it."""
    path = shutil.which("ngspice")
    if path is None:
        raise SpiceError(f"ngspice was not found on PATH; {INSTALL_HINT}")
    return path


def ngspice_version() -> str:
    """Version string such as 'ngspice-39' (part of dataset cache keys)."""
    return _version_of(ngspice_path())


@functools.lru_cache(maxsize=4)
def _version_of(executable: str) -> str:
    proc = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=30)
    match = re.search(r"ngspice-\S+", proc.stdout + proc.stderr)
    if match is None:
        raise SpiceError(f"{executable} --version printed no ngspice version; {INSTALL_HINT}")
    return match.group(0)


def _log_tail(text: str) -> str:
    """The last error/warning lines of an ngspice log (else its last lines)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    keys = ("error", "warning", "too small", "abort", "singular", "trouble", "fail")
    flagged = [ln for ln in lines if any(k in ln.lower() for k in keys)]
    return "\n".join((flagged or lines)[-LOG_TAIL_LINES:])


def _failure_hint(log: str) -> str:
    low = log.lower()
    if "timestep too small" in low:
        return ("the transient did not converge (timestep too small): check the input for "
                "huge values or steps, or lower max_step_fraction")
    if "singular matrix" in low:
        return "the circuit matrix is singular: a node has no DC path to ground in the netlist"
    if "error" in low or "unknown" in low:
        return "ngspice rejected the netlist: see its message below"
    return "ngspice produced no usable output: see its log below"


def _run_deck(deck: str, workdir: Path, timeout_s: float) -> str:
    """Run one deck in `workdir`; return ngspice's combined stdout/stderr log."""
    (workdir / "deck.cir").write_text(deck)
    try:
        proc = subprocess.run([ngspice_path(), "-b", "deck.cir"], cwd=workdir,
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise SpiceError(f"ngspice ran longer than {timeout_s:.0f} s on one chunk; lower "
                         f"chunk_seconds or raise max_step_fraction") from None
    return proc.stdout + "\n" + proc.stderr


# ------------------------------------------------------------------ operating point


def operating_point(pots: PotSettings, *, bright_volume: float = 0.0,
                    template: str | None = None) -> dict[str, float]:
    """DC node voltages at rest (zero input): plates, cathodes, V2A grid and B+.

    Keys are netlist node names; `netlist.STAGE_NODES` says which plate/cathode is which stage.
    Raises SpiceError if ngspice fails or a stage is cut off / saturated at rest.
    """
    return dict(_operating_point(pots, bright_volume, template))


@functools.lru_cache(maxsize=256)
def _operating_point(pots: PotSettings, bright_volume: float,
                     template: str | None) -> tuple[tuple[str, float], ...]:
    nodes = sorted({n for pair in STAGE_NODES.values() for n in pair} | {"g2a", B_PLUS_NODE})
    analysis = "\n".join([".op", ".control", "run",
                          *(f"print v({n})" for n in nodes), "quit 0", ".endc"])
    deck = render_netlist(pots, analysis=analysis, bright_volume=bright_volume,
                          template=template)
    with tempfile.TemporaryDirectory(prefix="ampstudy_op_") as tmp:
        log = _run_deck(deck, Path(tmp), timeout_s=60)
    if "singular matrix" in log:
        raise SpiceError(f"ngspice found no DC operating point ({_failure_hint(log)}). "
                         f"ngspice log tail:\n{_log_tail(log)}")
    found = dict(re.findall(r"^v\((\w+)\)\s*=\s*(\S+)", log, flags=re.MULTILINE))
    missing = [n for n in nodes if n not in found]
    if missing:
        raise SpiceError(f"ngspice found no DC operating point ({_failure_hint(log)}); nodes "
                         f"{missing} missing. ngspice log tail:\n{_log_tail(log)}")
    op = {n: float(found[n]) for n in nodes}
    _check_operating_point(op)
    return tuple(op.items())


def _check_operating_point(op: dict[str, float]) -> None:
    b_plus = op[B_PLUS_NODE]
    lo, hi = PLATE_BAND[0] * b_plus, PLATE_BAND[1] * b_plus
    for stage, (plate, cathode) in STAGE_NODES.items():
        if not all(math.isfinite(op[n]) for n in (plate, cathode)):
            raise SpiceError(f"{stage}: DC operating point is not finite: {op}")
        # A cathode follower's cathode sits just above its grid, inside the same band.
        node = cathode if plate == B_PLUS_NODE else plate
        if not lo <= op[node] <= hi:
            raise SpiceError(
                f"{stage}: {node} = {op[node]:.1f} V at rest with B+ = {b_plus:.0f} V (expected "
                f"{lo:.0f}..{hi:.0f} V): the stage is cut off or saturated; check the netlist's "
                f"tube model and bias resistors")


# ------------------------------------------------------------------ transient


@dataclass(frozen=True)
class Chunk:
    """One ngspice run: output samples n_warmup..n_warmup+n_keep of input `x` are kept."""

    x: np.ndarray
    n_warmup: int
    n_keep: int
    fade: bool
    fs: int
    pots: PotSettings
    max_step_fraction: float
    bright_volume: float
    template: str | None


def _write_input(path: Path, x: np.ndarray, fs: int) -> None:
    """(time, value) rows for XSPICE filesource. One format string over all rows: the same text as
    np.savetxt at a third of its CPU time, which the parent process spends while ngspice runs."""
    rows = np.empty(2 * len(x))
    rows[0::2], rows[1::2] = np.arange(len(x)) / fs, x
    path.write_text(("%.12e %.9e\n" * len(x)) % tuple(rows.tolist()))


def _transient_analysis(n: int, fs: int, max_step_fraction: float, out_file: str) -> str:
    step = 1.0 / fs
    return "\n".join([
        SOLVER_OPTIONS,
        f".save v({OUTPUT_NODE})",  # keep memory flat: only the output vector is stored
        f".tran {step:.15g} {(n - 1) * step:.15g} 0 {max_step_fraction * step:.15g}",
        ".control",
        "set wr_singlescale",
        "run",
        # linearize happily extrapolates an aborted run to tstop, so report where time ended.
        "let ampstudy_tlast = time[length(time) - 1]",
        "echo ampstudy_tlast $&ampstudy_tlast",
        f"linearize v({OUTPUT_NODE})",
        f"wrdata {out_file} v({OUTPUT_NODE})",
        "quit 0",
        ".endc",
    ])


def simulate_chunk(chunk: Chunk) -> np.ndarray:
    x = np.asarray(chunk.x, dtype=np.float64)
    if chunk.fade:
        k = min(int(FADE_IN_SECONDS * chunk.fs), chunk.n_warmup)
        x = x.copy()
        x[:k] *= 0.5 - 0.5 * np.cos(np.pi * np.arange(k) / max(k, 1))
    timeout = 120.0 + 300.0 * len(x) / chunk.fs
    with tempfile.TemporaryDirectory(prefix="ampstudy_spice_") as tmp:
        work = Path(tmp)
        _write_input(work / "input.txt", x, chunk.fs)
        deck = render_netlist(chunk.pots, input_path="input.txt",
                              analysis=_transient_analysis(len(x), chunk.fs,
                                                           chunk.max_step_fraction, "out.txt"),
                              bright_volume=chunk.bright_volume, template=chunk.template)
        log = _run_deck(deck, work, timeout)
        out_path = work / "out.txt"
        data = _read_rows(out_path) if out_path.exists() else np.empty((0, 2))
    match = re.search(r"^ampstudy_tlast (\S+)", log, flags=re.MULTILINE)
    t_stop = (len(x) - 1) / chunk.fs
    # echo prints 6 significant digits: past 8 x 44.1 kHz that is coarser than half a sample
    if "aborted" in log or match is None or float(match.group(1)) < t_stop * (1 - 1e-5) - 0.5 / chunk.fs:
        reached = f"stopped at t = {match.group(1)} s of {t_stop:.6g} s" if match else "no run"
        raise SpiceError(f"ngspice transient failed ({reached}; {_failure_hint(log)}). "
                         f"ngspice log tail:\n{_log_tail(log)}")
    if data.shape[0] != len(x):
        raise SpiceError(f"ngspice returned {data.shape[0]} of {len(x)} output samples "
                         f"({_failure_hint(log)}). ngspice log tail:\n{_log_tail(log)}")
    expected_t = np.arange(len(x)) / chunk.fs
    # wrdata prints 9 significant digits: at 8 x 44.1 kHz, 2 s in, that is 2e-3 of a sample
    if not np.allclose(data[:, 0], expected_t, rtol=1e-8, atol=1e-3 / chunk.fs):
        raise SpiceError("ngspice output is not on the sample grid n/fs (linearize failed); "
                         f"ngspice log tail:\n{_log_tail(log)}")
    y = data[:, 1]
    if not np.all(np.isfinite(y)):
        raise SpiceError(f"ngspice output contains NaN/inf ({_failure_hint(log)}); "
                         f"ngspice log tail:\n{_log_tail(log)}")
    return y[chunk.n_warmup:chunk.n_warmup + chunk.n_keep]


def _read_rows(path: Path) -> np.ndarray:
    text = path.read_text()
    values = np.array(text.split(), dtype=np.float64) if text.strip() else np.empty(0)
    if values.size % 2:
        return np.empty((0, 2))
    return values.reshape(-1, 2)


def chunk_key(chunk: Chunk) -> str:
    """Hash of exactly what determines a chunk's output: netlist, input samples, solver, ngspice."""
    digest = hashlib.sha256()
    deck = render_netlist(chunk.pots, bright_volume=chunk.bright_volume, template=chunk.template)
    for part in (CHUNK_CACHE_VERSION, ngspice_version(), deck, chunk.fs, chunk.n_warmup, chunk.n_keep,
                 chunk.fade, repr(chunk.max_step_fraction), SOLVER_OPTIONS):
        digest.update(str(part).encode() + b"\0")
    digest.update(np.ascontiguousarray(chunk.x, dtype=np.float64).tobytes())
    return digest.hexdigest()[:40]

# --- many signals, many knob settings: chunks through one pool of ngspice processes, a chunk cache ---


def plan_chunks(n: int, fs: int, chunk_seconds: float,
                warmup_seconds: float) -> list[tuple[int, int, int]]:
    """(warm-up start, chunk start, chunk end) sample indices covering 0..n.

    The chunks are of equal size (at most chunk_seconds), so no short last chunk leaves a worker idle.
    """
    limit = max(1, round(chunk_seconds * fs))
    count = max(1, math.ceil(n / limit))
    bounds = [round(i * n / count) for i in range(count + 1)]
    warm = max(0, round(warmup_seconds * fs))
    return [(max(0, s - warm), s, e) for s, e in zip(bounds[:-1], bounds[1:]) if e > s]


@dataclass(frozen=True)
class SpiceJob:
    """One signal to simulate at one knob setting: input volts at the amp's input jack."""

    x_volts: np.ndarray
    pots: PotSettings


@dataclass
class SpiceProgress:
    """What `simulate_many` reports after every finished (or cached) chunk."""

    done_seconds: float  # audio seconds simulated or found in the cache so far
    total_seconds: float
    jobs_done: int
    jobs_total: int
    chunks_done: int
    chunks_total: int


def simulate(x_volts: np.ndarray, fs: int, pots: PotSettings, *,
             progress: Callable[[int, int], None] | None = None, **options) -> np.ndarray:
    """Output voltage of the preamp (tone-stack output) for input voltage `x_volts` at rate fs.

    Returns float64 of the same length at rate fs. `progress(n_done_chunks,
    n_total)` is called as chunks end; `options` are those of `simulate_many` (workers = parallel
    ngspice processes, 0 = os.cpu_count(); `template` replaces the netlist template in tests).
    Raises SpiceError with the fix on failure.
    """
    report = None if progress is None else (lambda p: progress(p.chunks_done, p.chunks_total))
    return simulate_many([SpiceJob(np.asarray(x_volts), pots)], fs, progress=report, **options)[0]


def simulate_many(jobs: list[SpiceJob], fs: int, *, oversampling: int = 1, max_step_fraction: float = 0.25,
                  chunk_seconds: float = 2.0, warmup_seconds: float = 0.2, workers: int = 0,
                  progress: Callable[[SpiceProgress], None] | None = None,
                  bright_volume: float = 0.0, template: str | None = None,
                  cache_dir: str | Path | None = None) -> list[np.ndarray]:
    """`simulate` for many (signal, knob setting) jobs through ONE pool of ngspice processes.

    All chunks of all jobs are queued longest first, so every core stays busy until the end
    instead of idling at the end of each setting. With `oversampling` K > 1, each input is
    interpolated to K x fs, simulated there (the solver's largest step stays max_step_fraction of a
    sample at fs, so the run costs about what K = 1 costs) and the output decimated back to fs through
    the anti-alias filter of datamodules/resampling.py. With `cache_dir`, every finished chunk is
    stored there under a hash of exactly what determines it (netlist, input samples, solver
    settings, ngspice version) and verified by its sha256 when read back: a killed run resumes
    from its finished chunks, and a damaged cache file is simulated again.
    """
    xs = [np.asarray(job.x_volts, dtype=np.float64) for job in jobs]
    for x in xs:
        if x.ndim != 1:
            raise SpiceError(f"simulate expects a 1-D signal, got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise SpiceError("input audio contains NaN/inf samples; clean the input file")
    if not 0 < max_step_fraction <= 1:
        raise SpiceError(f"max_step_fraction {max_step_fraction} must be in (0, 1]")
    if not (isinstance(oversampling, int) and 1 <= oversampling <= resampling.MAX_OVERSAMPLING):
        raise SpiceError(f"oversampling {oversampling!r} must be a whole number in "
                               f"1..{resampling.MAX_OVERSAMPLING}")
    n_base = [len(x) for x in xs]
    sim_fs = fs * oversampling  # the chunks' sample rate: K is part of every chunk's key through it
    for job in jobs:  # fail early and clearly on a netlist whose stages are cut off
        operating_point(job.pots, bright_volume=bright_volume, template=template)
    # Memory: one oversampled copy of each input (the chunks are views of it) until its job is done,
    # and each job's output at K x fs only until its last chunk is in, when it is decimated.
    outputs = [np.empty(n * oversampling) for n in n_base]
    work: list[tuple[int, int, int, Chunk]] = []  # (job, start, end, chunk)
    for j, (x, job) in enumerate(zip(xs, jobs)):
        if len(x) == 0:
            continue
        x = resampling.upsample(x, oversampling)
        padded = np.concatenate([x, np.full(TAIL_SAMPLES, x[-1])])
        for w, s, e in plan_chunks(len(x), sim_fs, chunk_seconds, warmup_seconds):
            work.append((j, s, e, Chunk(padded[w:e + TAIL_SAMPLES], s - w, e - s, fade=s > 0, fs=sim_fs,
                                         pots=job.pots, max_step_fraction=max_step_fraction * oversampling,
                                         bright_volume=bright_volume, template=template)))
    del xs
    cache = ChunkCache(cache_dir) if cache_dir is not None else None
    remaining = [sum(1 for item in work if item[0] == j) for j in range(len(jobs))]
    state = SpiceProgress(0.0, sum(n_base) / fs, sum(r == 0 for r in remaining), len(jobs),
                          0, len(work))

    def finished(j: int, s: int, e: int, y: np.ndarray) -> None:
        outputs[j][s:e] = y
        remaining[j] -= 1
        if remaining[j] == 0:
            outputs[j] = resampling.decimate(outputs[j], oversampling)[:n_base[j]]
        state.done_seconds += (e - s) / sim_fs
        state.jobs_done += remaining[j] == 0
        state.chunks_done += 1
        if progress is not None:
            progress(state)

    if progress is not None:
        progress(state)
    pending = []
    for j, s, e, chunk in work:
        cached = cache.get(chunk) if cache is not None else None
        if cached is not None:
            finished(j, s, e, cached)
        else:
            pending.append((j, s, e, chunk))
    del work  # a finished job's input is freed once its chunks are
    pending.sort(key=lambda item: -len(item[3].x))  # longest first: no long chunk starts last
    n_workers = max(1, min(workers or available_cores(), len(pending)))
    # Threads suffice: each chunk's work happens in its own ngspice process.
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        futures = {pool.submit(simulate_chunk, chunk): (j, s, e, chunk) for j, s, e, chunk in pending}
        del pending
        try:
            for future in as_completed(list(futures)):
                j, s, e, chunk = futures.pop(future)
                y = future.result()
                if cache is not None:
                    cache.put(chunk, y)
                finished(j, s, e, y)
        except BaseException:
            for future in futures:  # a failed chunk fails the run: do not start the rest
                future.cancel()
            raise
    return outputs


class ChunkCache:
    """Finished chunk outputs on disk, keyed by `chunk_key` and checked by sha256 when read."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def get(self, chunk: Chunk) -> np.ndarray | None:
        path = self.directory / f"{chunk_key(chunk)}.npy"
        if not path.is_file():
            return None
        data = path.read_bytes()
        expected = path.with_suffix(".sha256")
        if not expected.is_file() or expected.read_text().strip() != hashlib.sha256(data).hexdigest():
            return None  # damaged or half-written: simulate it again
        y = np.load(io.BytesIO(data))
        return y if y.shape == (chunk.n_keep,) and np.all(np.isfinite(y)) else None

    def put(self, chunk: Chunk, y: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(y, dtype=np.float64))
        data = buffer.getvalue()
        path = self.directory / f"{chunk_key(chunk)}.npy"
        write_atomically(path, data)
        write_atomically(path.with_suffix(".sha256"), hashlib.sha256(data).hexdigest().encode())
