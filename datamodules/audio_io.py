"""Reading user DI recordings with checks that name the fix, and atomic float wav writing.

Both work on whole arrays (`load_wav`, `save_wav`) or block by block (`wav_blocks`,
`check_wav_levels`, `wav_writer`), so a file of any length can be checked and rendered in
bounded memory; the block forms and the whole forms share one set of checks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from foundation.errors import AmpStudyError
from foundation.files import atomic_path
from foundation.input_rules import InputRejected, audio_levels

SILENCE_DBFS = -60.0  # a DI whose peak is below this is almost certainly not a recording
CLIP_LEVEL = 0.999  # samples at or above this magnitude count as clipped
CLIP_SHARE = 1e-3  # more than this share of clipped samples (and at least CLIP_MIN_COUNT) is an error
CLIP_MIN_COUNT = 16
MIN_SECONDS = 0.5
CHECK_BLOCK = 1 << 18  # samples per block when a file is checked without being kept in memory


def check_wav_format(path: str | Path, fs: int | None, *, given_as: str = "data.audio.wav_files",
                     rate_name: str = "data.sample_rate") -> sf._SoundFileInfo:
    """The file's info if it is a readable mono audio file at `fs` Hz (None: any rate), else an
    error naming the fix: where the path was given (`given_as`) and whose rate `fs` is
    (`rate_name`). Reads only the header."""
    path = Path(path)
    if not path.is_file():
        raise AmpStudyError(f"{path}: no such audio file; fix the path in {given_as}")
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as err:
        raise AmpStudyError(f"{path}: not a readable audio file ({err}); convert it to wav, "
                            f"e.g. sox in.mp3 -r {fs or 44100} -c 1 out.wav") from None
    if fs is not None and info.samplerate != fs:
        raise AmpStudyError(f"{path}: sample rate is {info.samplerate} Hz, {rate_name} is {fs} Hz; "
                            f"resample to {fs} Hz, e.g. sox in.wav -r {fs} out.wav")
    if info.channels != 1:
        raise AmpStudyError(f"{path}: has {info.channels} channels, a DI recording must be mono; "
                            "mix down to mono: sox in.wav -c 1 out.wav")
    return info


class LevelChecks:
    """The level checks of a DI recording, fed block by block: finite samples, peak within full
    scale (checked as blocks arrive), then length, silence and clipping (`finish`)."""

    def __init__(self, path: str | Path, fs: int) -> None:
        self.path, self.fs = Path(path), fs
        self.samples = self.clipped = 0
        self.peak = 0.0

    def add(self, x: np.ndarray) -> None:
        nonfinite = int(np.count_nonzero(~np.isfinite(x)))
        if len(x) and not nonfinite:
            self.peak = max(self.peak, float(np.abs(x).max()))
        try:
            audio_levels(str(self.path), self.peak, nonfinite)
        except InputRejected as err:
            raise AmpStudyError(str(err)) from None
        self.samples += len(x)
        self.clipped += int(np.count_nonzero(np.abs(x) >= CLIP_LEVEL))

    def finish(self, min_seconds: float) -> None:
        path, seconds = self.path, self.samples / self.fs
        if seconds < min_seconds:
            raise AmpStudyError(f"{path}: only {seconds:.3f} s of audio, need at least {min_seconds} s; "
                                "use a longer recording")
        peak_db = 20 * np.log10(self.peak) if self.peak > 0 else -np.inf
        if peak_db < SILENCE_DBFS:
            raise AmpStudyError(f"{path}: peak level is {peak_db:.1f} dBFS, the file is (nearly) silent; "
                                "check the recording, or normalise it, e.g. sox in.wav out.wav gain -n -6")
        if self.clipped >= CLIP_MIN_COUNT and self.clipped > CLIP_SHARE * self.samples:
            raise AmpStudyError(f"{path}: {self.clipped} samples ({100 * self.clipped / self.samples:.2f}%) are "
                                "at full scale, the recording is clipped; record it again with less input gain "
                                "(turning it down afterwards does not remove clipping)")


def load_wav(path: str | Path, fs: int, *, min_seconds: float = MIN_SECONDS) -> np.ndarray:
    """Mono float32 samples of the audio file at `path`, or an AmpStudyError naming the fix.

    Full scale (+-1.0) is taken as DataConfig.input_full_scale_volts at the amp's input.
    """
    check_wav_format(path, fs)
    x = _read(path)
    checks = LevelChecks(path, fs)
    checks.add(x)
    checks.finish(min_seconds)
    return x


def check_wav_levels(path: str | Path, fs: int, *, min_seconds: float = MIN_SECONDS) -> int:
    """The checks of `load_wav` without keeping the file in memory; returns its length in samples."""
    checks = LevelChecks(path, fs)
    for block in wav_blocks(path, fs, CHECK_BLOCK):
        checks.add(block)
    checks.finish(min_seconds)
    return checks.samples


def wav_blocks(path: str | Path, fs: int, block_samples: int) -> Iterator[np.ndarray]:
    """Consecutive float32 mono blocks of `block_samples` (the last may be shorter), read lazily."""
    check_wav_format(path, fs)
    try:
        for block in sf.blocks(str(path), blocksize=block_samples, dtype="float32", always_2d=True):
            yield block[:, 0]
    except (RuntimeError, sf.LibsndfileError) as err:
        raise AmpStudyError(f"{path}: could not be read to the end ({err}); re-export the recording") from None


@contextlib.contextmanager
def wav_writer(path: str | Path, fs: int) -> Iterator[Callable[[np.ndarray], None]]:
    """`write(block)` appends float32 mono samples; the file appears at `path` only when the block
    ends without an error, with the mode the umask gives (foundation.files.atomic_path)."""
    with atomic_path(path) as tmp:
        with sf.SoundFile(tmp, "w", samplerate=fs, channels=1, format="WAV", subtype="FLOAT") as out:
            yield lambda block: out.write(np.asarray(block, dtype=np.float32))


def save_wav(path: str | Path, x: np.ndarray, fs: int) -> None:
    """Write mono float32 wav atomically (it appears complete or not at all), mode per the umask."""
    with wav_writer(path, fs) as write:
        write(x)


def read_float_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """(float32 mono samples, rate) of a file this package wrote; no user-input checks."""
    x, fs = sf.read(str(path), dtype="float32", always_2d=False)
    return x, int(fs)


def _read(path: str | Path) -> np.ndarray:
    try:
        return sf.read(str(path), dtype="float32", always_2d=True)[0][:, 0]
    except (RuntimeError, sf.LibsndfileError) as err:
        raise AmpStudyError(f"{path}: not a readable audio file ({err}); convert it to wav") from None
