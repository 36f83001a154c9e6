"""Synthetic guitar and bass DI signals: the default input to the SPICE Bassman (no downloads).

Recipe (`synth_corpus`): a seeded sequence of short segments separated by 30-250 ms of silence,
each segment normalised to a random peak level between -30 and -0.1 dBFS (soft to hard
playing). Segment kinds are drawn from a shuffled "deck" so every kind appears once per round
even in a short corpus:

- guitar_line: single-note melody (E2 82 Hz .. E6 1.3 kHz) from a random key/scale, mixed
  note lengths, staccato to let-ring articulation, accents and occasional vibrato.
- guitar_chords: strummed barre/power chords on a standard-tuned six-string, down and up
  strokes with 3-25 ms between strings, some strums palm-muted.
- palm_mutes: chugged power chords or single low notes with a short, dark decay.
- bass_line: finger- or pick-style bass line (E1 41 Hz .. G3 196 Hz), legato to staccato.
- bass_mutes: muted, short bass notes.
- sweep: exponential sine sweep between ~20 Hz and ~10 kHz (up or down).
- noise: white, pink or brown noise bursts, flat or percussive envelopes.

Plucked strings use modal synthesis (vectorised, unlike a Karplus-Strong loop): harmonic
partials with string inharmonicity, amplitudes shaped by the pluck position, a magnetic
pickup's position comb and a pick-hardness low-pass, per-partial exponential decay that grows
with frequency, a second slightly detuned polarisation (beating), a short attack ramp, a pick
noise click and a release when the note is damped. Each instrument segment then passes a
pickup resonance (second-order low-pass at 2-6 kHz, Q 0.7-2.5).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import signal

GUITAR_MIDI = (40, 88)  # E2 (82.4 Hz) .. E6 (1318.5 Hz)
BASS_MIDI = (28, 55)  # E1 (41.2 Hz) .. G3 (196 Hz)
GUITAR_OPEN_STRINGS = (40, 45, 50, 55, 59, 64)  # standard tuning E A D G B E
PEAK_DB_RANGE = (-30.0, -0.1)  # per-segment peak level: soft to hard picking
SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "minor_pentatonic": (0, 3, 5, 7, 10),
    "blues": (0, 3, 5, 6, 7, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
}
CHORD_SHAPES = {  # frets relative to the barre, low E string first; None = string not played
    "E_major": (0, 2, 2, 1, 0, 0), "E_minor": (0, 2, 2, 0, 0, 0), "E_dom7": (0, 2, 0, 1, 0, 0),
    "A_major": (None, 0, 2, 2, 2, 0), "A_minor": (None, 0, 2, 2, 1, 0),
    "E_power": (0, 2, 2, None, None, None), "A_power": (None, 0, 2, 2, None, None),
}


def midi_to_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69.0) / 12.0)


def pluck(f0: float, duration: float, fs: int, rng: np.random.Generator, *, velocity: float = 0.7,
          bass: bool = False, muted: bool = False, vibrato: bool = False) -> np.ndarray:
    """One plucked string note held for `duration` s, then damped (release tail appended)."""
    velocity = float(np.clip(velocity, 0.05, 1.0))
    if muted:  # palm mute: the hand damps the string, killing the highs and the sustain
        t60 = rng.uniform(0.08, 0.3)
        damping_hz = rng.uniform(300.0, 700.0)
        pick_hz = rng.uniform(600.0, 1500.0)
    else:
        t60 = rng.uniform(3.0, 8.0) if bass else rng.uniform(1.5, 5.0) * (200.0 / f0) ** 0.3
        damping_hz = rng.uniform(800.0, 2500.0)
        pick_hz = (rng.uniform(800.0, 2500.0) if bass else rng.uniform(1500.0, 3000.0)) * (0.5 + 1.5 * velocity)
    release = rng.uniform(0.01, 0.06)
    length = int(round(min(duration + 5 * release, 1.2 * t60 + 0.05) * fs))  # stop ~ -70 dB
    length = max(length, int(0.02 * fs))

    inharmonicity = rng.uniform(5e-5, 3e-4) if bass else rng.uniform(1e-5, 1e-4)
    max_hz = min(8000.0, 0.45 * fs)
    n = np.arange(1, 61, dtype=np.float64)
    freqs = f0 * n * np.sqrt(1.0 + inharmonicity * n**2)
    keep = freqs < max_hz
    n, freqs = n[keep], freqs[keep]
    pluck_pos = rng.uniform(0.08, 0.25)  # fraction of the scale length from the bridge
    pickup_pos = rng.uniform(0.06, 0.25)  # bridge (bright) to neck (warm) pickup
    amps = (np.sin(np.pi * n * pluck_pos) * np.sin(np.pi * n * pickup_pos) / n
            / (1.0 + (freqs / pick_hz) ** 2))
    big = np.abs(amps) > 1e-4 * np.abs(amps).max()
    n, freqs, amps = n[big], freqs[big], amps[big]
    decay = 6.91 / t60 * (1.0 + (freqs / damping_hz) ** 2)  # higher partials die faster

    detune = 1.0 + rng.uniform(2e-4, 2e-3)  # second polarisation: slightly sharp, faster decay
    rates = np.concatenate([-decay + 2j * np.pi * freqs, -1.5 * decay + 2j * np.pi * freqs * detune])
    weights = np.concatenate([amps, 0.3 * amps]) * np.exp(2j * np.pi * rng.uniform(0, 1, 2 * len(amps)))
    note = damped_sinusoids(rates, weights, length, fs)
    if vibrato:  # finger vibrato: a slow wobble of a few cents, applied by warping time
        rate, cents = rng.uniform(4.0, 7.0), rng.uniform(10.0, 35.0)
        depth = 2.0 ** (cents / 1200.0) - 1.0
        t = np.arange(length) / fs
        onset = np.clip(t / 0.3, 0.0, 1.0)  # vibrato starts a moment after the pluck
        warped = t + depth * onset * (1.0 - np.cos(2 * np.pi * rate * t)) / (2 * np.pi * rate)
        note = np.interp(warped * fs, np.arange(length), note)

    attack = int(max(1, (rng.uniform(0.5, 3.0) if velocity > 0.5 else rng.uniform(2.0, 8.0)) * 1e-3 * fs))
    note[:attack] *= 0.5 - 0.5 * np.cos(np.pi * np.arange(attack) / attack)
    click_len = min(length, int(rng.uniform(0.001, 0.004) * fs))  # pick scraping the string
    click = rng.standard_normal(click_len) * np.hanning(click_len)
    note[:click_len] += np.diff(click, prepend=0.0) * 0.15 * velocity * np.abs(amps).sum()
    release_start = int(duration * fs)
    if release_start < length:
        tail = np.arange(length - release_start) / fs
        note[release_start:] *= np.exp(-tail / release)
    return note * velocity / max(np.abs(amps).sum(), 1e-12)


def damped_sinusoids(rates: np.ndarray, weights: np.ndarray, length: int, fs: int) -> np.ndarray:
    """sum_k Im(weights_k * exp(rates_k * t)) for t = n / fs, n < length.

    Block recursion: exp(r (t + B/fs)) = exp(r t) exp(r B/fs), so each block is one complex
    matrix-vector product instead of length x partials calls to sin and exp.
    """
    block = 2048
    # Partials whose envelope has fallen 100 dB below the strongest start are dropped; sorting
    # by that end time makes the still-active ones a prefix of the columns.
    floor = np.abs(weights).max() * 1e-5
    ends = np.log(np.maximum(np.abs(weights), floor) / floor) / np.maximum(-rates.real, 1e-9) * fs
    order = np.argsort(-ends)
    rates, weights, ends = rates[order], weights[order].astype(np.complex128), ends[order]
    basis = np.asfortranarray(np.exp(np.outer(np.arange(block) / fs, rates)))
    step = np.exp(rates * block / fs)
    out = np.zeros(length)
    for start in range(0, length, block):
        active = int(np.count_nonzero(ends > start))
        if active == 0:
            break
        n = min(block, length - start)
        # einsum, not @: OpenBLAS threads make these small products much slower on a busy machine
        out[start:start + n] = np.einsum("ij,j->i", basis[:n, :active], weights[:active]).imag
        weights[:active] *= step[:active]
    return out


def add_at(buffer: np.ndarray, sound: np.ndarray, start: int) -> np.ndarray:
    """Mix `sound` into `buffer` at sample `start`, growing the buffer when needed."""
    end = start + len(sound)
    if end > len(buffer):
        buffer = np.concatenate([buffer, np.zeros(end - len(buffer))])
    buffer[start:end] += sound
    return buffer


def pickup_tone(x: np.ndarray, fs: int, rng: np.random.Generator) -> np.ndarray:
    """Magnetic pickup + cable: a resonant second-order low-pass (RBJ cookbook)."""
    f_res = min(rng.uniform(2000.0, 6000.0), 0.4 * fs)
    q = rng.uniform(0.7, 2.5)
    w0 = 2 * np.pi * f_res / fs
    alpha = np.sin(w0) / (2 * q)
    cosw = np.cos(w0)
    b = np.array([(1 - cosw) / 2, 1 - cosw, (1 - cosw) / 2])
    a = np.array([1 + alpha, -2 * cosw, 1 - alpha])
    return signal.lfilter(b / a[0], a / a[0], x)


def _rhythm(rng: np.random.Generator, count: int) -> np.ndarray:
    """Onset gaps in seconds for `count` notes: a tempo and a mix of subdivisions."""
    beat = 60.0 / rng.uniform(70.0, 180.0)
    choices = np.array([0.25, 1 / 3, 0.5, 0.75, 1.0, 1.5, 2.0])
    return beat * rng.choice(choices, size=count, p=[0.15, 0.1, 0.3, 0.1, 0.2, 0.05, 0.1])


def _melody(rng: np.random.Generator, lo: int, hi: int, count: int) -> np.ndarray:
    """MIDI notes of a random walk over a random scale within lo..hi, with occasional leaps."""
    scale = SCALES[rng.choice(list(SCALES))]
    root = int(rng.integers(0, 12))
    pool = np.array([m for m in range(lo, hi + 1) if (m - root) % 12 in scale])
    idx = int(rng.integers(0, len(pool)))
    notes = []
    for _ in range(count):
        notes.append(pool[idx])
        step = int(rng.choice([-2, -1, -1, 1, 1, 2, 0])) if rng.random() > 0.15 else int(rng.integers(-7, 8))
        idx = int(np.clip(idx + step, 0, len(pool) - 1))
    return np.array(notes)


def _line(rng: np.random.Generator, fs: int, midi_range: tuple[int, int], bass: bool, muted: bool) -> np.ndarray:
    count = int(rng.integers(3, 10))
    lo, hi = midi_range
    if hi - lo > 24 and rng.random() < 0.5:  # most lines stay in one octave-and-a-half window
        lo = int(rng.integers(lo, hi - 18))
        hi = lo + 18
    notes = _melody(rng, lo, hi, count)
    gaps = _rhythm(rng, count) * (0.5 if muted else 1.0)
    articulation = rng.uniform(0.3, 1.5)  # < 1 staccato, > 1 let ring
    base_velocity = rng.uniform(0.3, 1.0)
    crescendo = rng.uniform(-0.4, 0.4)
    out = np.zeros(1)
    start = 0.0
    for i, (note, gap) in enumerate(zip(notes, gaps)):
        velocity = base_velocity * (1 + crescendo * (i / max(count - 1, 1) - 0.5)) * rng.uniform(0.75, 1.15)
        vibrato = (not muted) and gap > 0.3 and rng.random() < 0.3
        sound = pluck(midi_to_hz(note), gap * articulation, fs, rng, velocity=velocity, bass=bass,
                      muted=muted, vibrato=vibrato)
        out = add_at(out, sound, int(start * fs))
        start += gap
    return pickup_tone(out, fs, rng)


def guitar_line(rng: np.random.Generator, fs: int) -> np.ndarray:
    return _line(rng, fs, GUITAR_MIDI, bass=False, muted=False)


def bass_line(rng: np.random.Generator, fs: int) -> np.ndarray:
    return _line(rng, fs, BASS_MIDI, bass=True, muted=False)


def bass_mutes(rng: np.random.Generator, fs: int) -> np.ndarray:
    return _line(rng, fs, BASS_MIDI, bass=True, muted=True)


def _chord_notes(rng: np.random.Generator, shape_names: list[str]) -> list[int | None]:
    shape = CHORD_SHAPES[shape_names[int(rng.integers(0, len(shape_names)))]]
    barre = int(rng.integers(0, 11))
    return [None if fret is None else open_ + barre + fret for open_, fret in zip(GUITAR_OPEN_STRINGS, shape)]


def _strums(rng: np.random.Generator, fs: int, shapes: list[str], muted_share: float) -> np.ndarray:
    count = int(rng.integers(2, 9))
    gaps = _rhythm(rng, count)
    chord = _chord_notes(rng, shapes)
    base_velocity = rng.uniform(0.3, 1.0)
    out = np.zeros(1)
    start = 0.0
    for i, gap in enumerate(gaps):
        if i and rng.random() < 0.3:
            chord = _chord_notes(rng, shapes)
        down = i % 2 == 0 or rng.random() < 0.3
        strings = [(s, m) for s, m in enumerate(chord) if m is not None]
        if not down:  # up-strokes run high to low and often miss the lowest strings
            strings = strings[::-1][: max(2, len(strings) - int(rng.integers(0, 3)))]
        muted = rng.random() < muted_share
        spacing = rng.uniform(0.003, 0.025)
        velocity = base_velocity * (1.0 if down else 0.7) * rng.uniform(0.8, 1.15)
        hold = gap * (0.6 if muted else rng.uniform(0.8, 1.6))
        for k, (_, midi) in enumerate(strings):
            onset = start + k * spacing * rng.uniform(0.7, 1.3)
            sound = pluck(midi_to_hz(midi), max(hold - k * spacing, 0.02), fs, rng,
                          velocity=velocity * rng.uniform(0.8, 1.1), muted=muted)
            out = add_at(out, sound, int(onset * fs))
        start += gap
    return pickup_tone(out, fs, rng)


def guitar_chords(rng: np.random.Generator, fs: int) -> np.ndarray:
    shapes = [n for n in CHORD_SHAPES if "power" not in n] + ["E_power", "A_power"]
    return _strums(rng, fs, shapes, muted_share=0.15)


def palm_mutes(rng: np.random.Generator, fs: int) -> np.ndarray:
    if rng.random() < 0.3:  # single-note chugs on the low strings
        return _line(rng, fs, (40, 52), bass=False, muted=True)
    return _strums(rng, fs, ["E_power", "A_power"], muted_share=0.85)


def sweep(rng: np.random.Generator, fs: int) -> np.ndarray:
    """Exponential sine sweep; 10 ms fades keep it from clicking."""
    duration = rng.uniform(1.0, 3.0)
    f1, f2 = rng.uniform(20.0, 40.0), min(rng.uniform(5000.0, 12000.0), 0.45 * fs)
    if rng.random() < 0.3:
        f1, f2 = f2, f1
    t = np.arange(int(duration * fs)) / fs
    k = np.log(f2 / f1)
    x = np.sin(2 * np.pi * f1 * duration / k * (np.exp(t / duration * k) - 1.0))
    return x * _fades(len(x), int(0.01 * fs))


def noise(rng: np.random.Generator, fs: int) -> np.ndarray:
    """One to four noise bursts: white, pink (1/f) or brown (1/f^2) by spectral shaping."""
    out = np.zeros(1)
    start = 0
    for _ in range(int(rng.integers(1, 5))):
        length = int(rng.uniform(0.03, 0.5) * fs)
        spectrum = np.fft.rfft(rng.standard_normal(length))
        f = np.maximum(np.fft.rfftfreq(length, 1 / fs), 20.0)
        colour = rng.choice([0.0, 0.5, 1.0])  # amplitude slope: white, pink, brown
        burst = np.fft.irfft(spectrum / f**colour, n=length)
        if rng.random() < 0.5:
            burst *= np.exp(-np.arange(length) / (rng.uniform(0.01, 0.1) * fs))  # percussive
        burst *= _fades(length, int(0.002 * fs)) * rng.uniform(0.3, 1.0) / (np.abs(burst).max() + 1e-12)
        out = add_at(out, burst, start)
        start += length + int(rng.uniform(0.02, 0.2) * fs)
    return out


def _fades(length: int, fade: int) -> np.ndarray:
    env = np.ones(length)
    fade = min(fade, length // 2)
    if fade > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
        env[:fade] = ramp
        env[length - fade:] = ramp[::-1]
    return env


def segment_generators() -> dict[str, Callable[[np.random.Generator, int], np.ndarray]]:
    """Segment kind -> generator(rng, fs) returning float64 audio of arbitrary peak."""
    return {
        "guitar_line": guitar_line, "guitar_chords": guitar_chords, "palm_mutes": palm_mutes,
        "bass_line": bass_line, "bass_mutes": bass_mutes, "sweep": sweep, "noise": noise,
    }


def synth_corpus(seconds: float, fs: int, seed: int) -> np.ndarray:
    """`seconds` of guitar/bass-like DI (float32, peaks <= 1.0, full scale = input_full_scale_volts).

    Deterministic for (seconds, fs, seed). Starts with silence, so the amp settles at its
    operating point before any signal arrives.
    """
    total = int(round(seconds * fs))
    if total <= 0:
        return np.zeros(0, dtype=np.float32)
    rng = np.random.default_rng(seed)
    generators = segment_generators()
    kinds = sorted(generators)
    pieces: list[np.ndarray] = []
    length = 0
    deck: list[str] = []
    while length < total:
        gap = np.zeros(int(rng.uniform(0.03, 0.25) * fs))
        if not deck:
            deck = [kinds[i] for i in rng.permutation(len(kinds))]
        segment = generators[deck.pop()](rng, fs)
        peak_db = rng.uniform(*PEAK_DB_RANGE)
        segment *= 10.0 ** (peak_db / 20.0) / (np.abs(segment).max() + 1e-12)
        pieces += [gap, segment]
        length += len(gap) + len(segment)
    x = np.concatenate(pieces)[:total]
    fade = min(int(0.01 * fs), total)
    x[total - fade:] *= np.linspace(1.0, 0.0, fade)  # the cut may land mid-note
    return np.clip(x, -1.0, 1.0).astype(np.float32)


RIFF_KINDS = ("guitar_line", "guitar_chords", "palm_mutes")  # what a player tries an amp with
RIFF_PEAK_DB = -6.0


def synth_riff(seconds: float, fs: int, seed: int = 1) -> np.ndarray:
    """`seconds` of guitar playing (lines, strums, palm mutes in turn, each peaking at RIFF_PEAK_DB)
    for listening to a model: float32, starting and ending in silence."""
    rng = np.random.default_rng(seed)
    generators = segment_generators()
    total = int(round(seconds * fs))
    pieces, length, turn = [np.zeros(int(0.1 * fs))], 0, 0
    while length < total:
        segment = generators[RIFF_KINDS[turn % len(RIFF_KINDS)]](rng, fs)
        segment *= 10.0 ** (RIFF_PEAK_DB / 20.0) / (np.abs(segment).max() + 1e-12)
        pieces += [segment, np.zeros(int(0.08 * fs))]
        length += len(segment) + int(0.08 * fs)
        turn += 1
    x = np.concatenate(pieces)[:total]
    fade = min(int(0.05 * fs), total)
    x[total - fade:] *= np.linspace(1.0, 0.0, fade)
    return x.astype(np.float32)
