"""Many ngspice runs at once: signals cut into chunks, one pool of processes, a resumable chunk cache.

`simulate_many` queues every chunk of every (signal, knob setting) job longest first through one
pool, so all cores stay busy until the end; `simulate` is the one-signal case. How one chunk is
simulated (and why the chunks join seamlessly) is in datamodules/spice.py.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules import resampling, spice
from datamodules.config import PotSettings
from datamodules.spice import Chunk
from foundation.files import write_atomically


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
            raise spice.SpiceError(f"simulate expects a 1-D signal, got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise spice.SpiceError("input audio contains NaN/inf samples; clean the input file")
    if not 0 < max_step_fraction <= 1:
        raise spice.SpiceError(f"max_step_fraction {max_step_fraction} must be in (0, 1]")
    if not (isinstance(oversampling, int) and 1 <= oversampling <= resampling.MAX_OVERSAMPLING):
        raise spice.SpiceError(f"oversampling {oversampling!r} must be a whole number in "
                               f"1..{resampling.MAX_OVERSAMPLING}")
    n_base = [len(x) for x in xs]
    sim_fs = fs * oversampling  # the chunks' sample rate: K is part of every chunk's key through it
    for job in jobs:  # fail early and clearly on a netlist whose stages are cut off
        spice.operating_point(job.pots, bright_volume=bright_volume, template=template)
    # Memory: one oversampled copy of each input (the chunks are views of it) until its job is done,
    # and each job's output at K x fs only until its last chunk is in, when it is decimated.
    outputs = [np.empty(n * oversampling) for n in n_base]
    work: list[tuple[int, int, int, Chunk]] = []  # (job, start, end, chunk)
    for j, (x, job) in enumerate(zip(xs, jobs)):
        if len(x) == 0:
            continue
        x = resampling.upsample(x, oversampling)
        padded = np.concatenate([x, np.full(spice.TAIL_SAMPLES, x[-1])])
        for w, s, e in plan_chunks(len(x), sim_fs, chunk_seconds, warmup_seconds):
            work.append((j, s, e, Chunk(padded[w:e + spice.TAIL_SAMPLES], s - w, e - s, fade=s > 0, fs=sim_fs,
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
    n_workers = max(1, min(workers or spice.available_cores(), len(pending)))
    # Threads suffice: each chunk's work happens in its own ngspice process.
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        futures = {pool.submit(spice.simulate_chunk, chunk): (j, s, e, chunk) for j, s, e, chunk in pending}
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
    """Finished chunk outputs on disk, keyed by `spice.chunk_key` and checked by sha256 when read."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def get(self, chunk: Chunk) -> np.ndarray | None:
        path = self.directory / f"{spice.chunk_key(chunk)}.npy"
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
        path = self.directory / f"{spice.chunk_key(chunk)}.npy"
        write_atomically(path, data)
        write_atomically(path.with_suffix(".sha256"), hashlib.sha256(data).hexdigest().encode())
