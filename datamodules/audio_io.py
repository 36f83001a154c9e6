"""Reading user DI recordings with checks that name the fix, and atomic float wav writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from foundation.errors import AmpStudyError
from foundation.files import write_with

SILENCE_DBFS = -60.0  # a DI whose peak is below this is almost certainly not a recording
CLIP_LEVEL = 0.999  # samples at or above this magnitude count as clipped
CLIP_SHARE = 1e-3  # more than this share of clipped samples (and at least CLIP_MIN_COUNT) is an error
CLIP_MIN_COUNT = 16
MIN_SECONDS = 0.5


def load_wav(path: str | Path, fs: int, *, min_seconds: float = MIN_SECONDS) -> np.ndarray:
    """Mono float32 samples of the audio file at `path`, or an AmpStudyError naming the fix.

    Full scale (+-1.0) is taken as DataConfig.input_full_scale_volts at the amp's input.
    """
    path = Path(path)
    if not path.is_file():
        raise AmpStudyError(f"{path}: no such audio file; fix the path in data.wav_files")
    try:
        info = sf.info(str(path))
        x = sf.read(str(path), dtype="float32", always_2d=True)[0]
    except (RuntimeError, sf.LibsndfileError) as err:
        raise AmpStudyError(f"{path}: not a readable audio file ({err}); convert it to wav, "
                            f"e.g. sox in.mp3 -r {fs} -c 1 out.wav") from None
    if info.samplerate != fs:
        raise AmpStudyError(f"{path}: sample rate is {info.samplerate} Hz, data.sample_rate is {fs} Hz; "
                            f"resample to {fs} Hz, e.g. sox in.wav -r {fs} out.wav")
    if x.shape[1] != 1:
        raise AmpStudyError(f"{path}: has {x.shape[1]} channels, a DI recording must be mono; "
                            "mix down to mono: sox in.wav -c 1 out.wav")
    x = x[:, 0]
    if not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise AmpStudyError(f"{path}: {bad} samples are NaN or infinite; re-export the recording "
                            "(e.g. as 24-bit PCM) from the source")
    seconds = len(x) / fs
    if seconds < min_seconds:
        raise AmpStudyError(f"{path}: only {seconds:.3f} s of audio, need at least {min_seconds} s; "
                            "use a longer recording")
    peak = float(np.abs(x).max())
    peak_db = 20 * np.log10(peak) if peak > 0 else -np.inf
    if peak_db < SILENCE_DBFS:
        raise AmpStudyError(f"{path}: peak level is {peak_db:.1f} dBFS, the file is (nearly) silent; "
                            "check the recording, or normalise it, e.g. sox in.wav out.wav gain -n -6")
    if peak > 1.0:
        raise AmpStudyError(f"{path}: peak {peak:.3f} exceeds full scale 1.0 (a float wav); "
                            "normalise it, e.g. sox in.wav out.wav gain -n -1")
    clipped = int(np.count_nonzero(np.abs(x) >= CLIP_LEVEL))
    if clipped >= CLIP_MIN_COUNT and clipped > CLIP_SHARE * len(x):
        raise AmpStudyError(f"{path}: {clipped} samples ({100 * clipped / len(x):.2f}%) are at full scale, "
                            "the recording is clipped; record it again with less input gain "
                            "(turning it down afterwards does not remove clipping)")
    return x


def save_wav(path: str | Path, x: np.ndarray, fs: int) -> None:
    """Write mono float32 wav atomically (it appears complete or not at all), mode per the umask."""
    write_with(path, lambda tmp: sf.write(tmp, np.asarray(x, dtype=np.float32), fs, format="WAV", subtype="FLOAT"))


def read_float_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """(float32 mono samples, rate) of a file this package wrote; no user-input checks."""
    x, fs = sf.read(str(path), dtype="float32", always_2d=False)
    return x, int(fs)
