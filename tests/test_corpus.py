"""Synthetic DI corpus and wav input checks (no ngspice needed)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from datamodules.audio_io import load_wav, save_wav
from datamodules.corpus import bass_line, guitar_line, pluck, segment_generators, synth_corpus
from foundation.errors import AmpStudyError

FS = 44100


def spectrum(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.fft.rfftfreq(len(x), 1 / FS), np.abs(np.fft.rfft(x)) ** 2


def centroid(x: np.ndarray) -> float:
    f, p = spectrum(x)
    return float((f * p).sum() / p.sum())


def test_corpus_is_deterministic_per_seed():
    a, b, c = synth_corpus(3.0, FS, seed=7), synth_corpus(3.0, FS, seed=7), synth_corpus(3.0, FS, seed=8)
    assert a.dtype == np.float32 and len(a) == 3 * FS
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("seed", range(4))
def test_corpus_peaks_stay_within_full_scale_and_starts_silent(seed):
    x = synth_corpus(8.0, FS, seed)
    assert np.all(np.isfinite(x))
    assert np.abs(x).max() <= 1.0
    assert np.all(x[: int(0.02 * FS)] == 0)  # the amp settles before the first note


def test_corpus_levels_span_soft_to_hard_playing():
    x = synth_corpus(30.0, FS, seed=0)
    window = FS // 2
    peaks = np.abs(x[: len(x) // window * window]).reshape(-1, window).max(axis=1)
    peaks_db = 20 * np.log10(peaks[peaks > 1e-4])
    assert peaks_db.max() > -3.0
    assert peaks_db.min() < -20.0


def test_corpus_covers_every_segment_kind_and_is_not_sparse():
    x = synth_corpus(20.0, FS, seed=3)
    assert np.mean(np.abs(x) > 1e-4) > 0.6  # gaps are short
    for name, generate in segment_generators().items():
        seg = generate(np.random.default_rng(1), FS)
        assert len(seg) > 0.03 * FS and np.all(np.isfinite(seg)) and np.abs(seg).max() > 0, name


def test_bass_lines_sit_lower_than_guitar_lines():
    bass_low, guitar_low = [], []
    for seed in range(6):
        bass, guitar = bass_line(np.random.default_rng(seed), FS), guitar_line(np.random.default_rng(seed), FS)
        assert centroid(bass) < centroid(guitar)
        for x, store in ((bass, bass_low), (guitar, guitar_low)):
            f, p = spectrum(x)
            store.append(p[f < 200].sum() / p.sum())
    assert np.mean(bass_low) > 0.4 > 0.25 > np.mean(guitar_low)


@pytest.mark.parametrize("f0", [41.2, 82.4, 1318.5])
def test_pluck_has_its_fundamental(f0):
    x = pluck(f0, 1.0, FS, np.random.default_rng(0), velocity=0.8, bass=f0 < 60)
    f, p = spectrum(x)
    near = p[np.abs(f - f0) < 2].max()
    assert near > 1e-3 * p.max()  # within 30 dB of the strongest partial
    assert p[(f > 0.6 * f0) & (f < 0.9 * f0)].max() < 1e-2 * near  # nothing pitched below it


def test_palm_mute_dies_much_faster_than_a_ringing_note():
    ring = pluck(110.0, 2.0, FS, np.random.default_rng(0))
    muted = pluck(110.0, 2.0, FS, np.random.default_rng(0), muted=True)
    muted = np.concatenate([muted, np.zeros(FS)])  # a muted note may end early
    late = slice(int(0.4 * FS), int(0.6 * FS))
    assert np.abs(muted[late]).max() < 0.05 * np.abs(ring[late]).max()


# ---------------------------------------------------------------------- wav input


def write(path, data, fs=FS, subtype="FLOAT"):
    sf.write(str(path), data, fs, subtype=subtype)
    return path


def tone(seconds=1.0, level=0.5):
    t = np.arange(int(seconds * FS)) / FS
    return (level * np.sin(2 * np.pi * 110 * t)).astype(np.float32)


def test_good_wav_round_trips_through_save_and_load(tmp_path):
    x = tone()
    save_wav(tmp_path / "di.wav", x, FS)
    assert sf.info(str(tmp_path / "di.wav")).subtype == "FLOAT"
    assert np.array_equal(load_wav(tmp_path / "di.wav", FS), x)
    assert [p.name for p in tmp_path.iterdir()] == ["di.wav"]  # no temp file left behind


def test_pcm_wav_is_read_as_float(tmp_path):
    x = load_wav(write(tmp_path / "pcm.wav", tone(), subtype="PCM_24"), FS)
    assert x.dtype == np.float32 and abs(np.abs(x).max() - 0.5) < 1e-3


@pytest.mark.parametrize("case, message", [
    ("missing", "no such audio file"),
    ("not_audio", "not a readable audio file"),
    ("rate", "resample to 44100 Hz, e.g. sox in.wav -r 44100 out.wav"),
    ("stereo", "mix down to mono: sox in.wav -c 1 out.wav"),
    ("nan", "NaN or infinite"),
    ("silent", "nearly) silent"),
    ("clipped", "clipped"),
    ("over", "exceeds full scale"),
    ("short", "need at least 0.5 s"),
])
def test_bad_wav_names_the_fix(tmp_path, case, message):
    path = tmp_path / "in.wav"
    if case == "not_audio":
        path.write_text("hello")
    elif case == "rate":
        write(path, tone(), fs=48000)
    elif case == "stereo":
        write(path, np.stack([tone(), tone()], axis=1))
    elif case == "nan":
        x = tone()
        x[100] = np.nan
        write(path, x)
    elif case == "silent":
        write(path, tone(level=1e-4))
    elif case == "clipped":
        write(path, np.clip(tone(level=3.0), -1, 1))
    elif case == "over":
        write(path, tone(level=1.5))
    elif case == "short":
        write(path, tone(seconds=0.2))
    with pytest.raises(AmpStudyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_wav(path, FS)


def test_a_few_full_scale_peaks_are_not_clipping(tmp_path):
    x = tone(level=0.5)
    x[[1000, 20000, 30000]] = 1.0
    assert load_wav(write(tmp_path / "peaks.wav", x), FS).shape == x.shape
