"""The converters of a capture chain around the simulated amp: band-limited in, anti-aliased out.

A recording interface plays the DI through a band-limited reconstruction and records the amp
through an anti-alias filter before sampling. The SPICE dataset does the same in software:
`upsample` interpolates the DI to K x fs with a linear-phase low-pass (instead of the straight
lines ngspice's `filesource` draws between samples: -1.5 dB at 10 kHz, -6 dB at 20 kHz and images
above fs/2 at fs = 44.1 kHz, if fed at fs), ngspice runs on the K x fs grid, and `decimate` low-passes
its output with the same filter before keeping every K-th sample, so the distortion products the
tubes make above fs/2 are removed instead of folding back into the band.

The filter (one design, used both ways, at the oversampled rate):
- passband edge 0.45 fs (19.8 kHz at 44.1 kHz), stopband edge 0.5 fs: nothing at or above the
  base Nyquist frequency reaches the decimated output un-attenuated, so aliases can only come
  from the stopband's residue;
- a Kaiser window for STOPBAND_ATTENUATION_DB of attenuation (and that much passband flatness:
  ripple ~1e-5 dB), odd length, so its delay is a whole number of samples, which `resample_poly`
  removes: the result is time-aligned (zero phase) with the input;
- the price of a linear-phase filter is pre-ringing: a target sample depends on the input up to
  `filter_half_span(K)` base samples ahead (about 1/4 ms), confined to the 19.8-22 kHz band,
  like the converters of every capture interface.
K = 1 means no resampling at all: the chain of datasets built before oversampling existed.

Choosing K (DataConfig.oversampling; measured in benchmarks/results/spice_aliasing.md): ngspice
costs about the same at any K, because its step is set by max_step_fraction of a sample at fs or,
when the tubes clip, by its own accuracy control; what grows with K is the text ngspice writes and
this module's filtering (the parent's CPU) and the chunk cache on disk. Aliasing of full-level pure
tones falls steadily with K at volume 1 (worst tone -18.6 dB at K = 1, -74.9 dB at K = 16); on the
datasets' own DI the error against the reference stops improving past K = 8 to 16, where the
solver's step error takes over. The default is the largest K whose total CPU stays well inside 1.5x
of the point-sampled chain's.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import signal

PASSBAND_EDGE = 0.45  # x fs: flat up to here
STOPBAND_EDGE = 0.50  # x fs: attenuated from here (the base rate's Nyquist frequency)
STOPBAND_ATTENUATION_DB = 100.0
MAX_OVERSAMPLING = 16


@functools.lru_cache(maxsize=16)
def lowpass(oversampling: int) -> np.ndarray:
    """Unit-DC-gain FIR taps of the chain's low-pass at K x fs (odd length)."""
    k = int(oversampling)
    if not 2 <= k <= MAX_OVERSAMPLING:
        raise ValueError(f"oversampling {oversampling} must be in 2..{MAX_OVERSAMPLING} for a filter")
    nyquist = k / 2  # in units of the base rate fs
    taps, beta = signal.kaiserord(STOPBAND_ATTENUATION_DB, (STOPBAND_EDGE - PASSBAND_EDGE) / nyquist)
    taps += 1 - taps % 2  # odd: a whole-sample delay
    h = signal.firwin(taps, (PASSBAND_EDGE + STOPBAND_EDGE) / 2, window=("kaiser", beta), fs=k)
    h.setflags(write=False)
    return h


def filter_half_span(oversampling: int) -> float:
    """How far (in base samples) the filter reaches either side of a sample."""
    return 0.0 if oversampling == 1 else (len(lowpass(oversampling)) - 1) / 2 / oversampling


def upsample(x: np.ndarray, oversampling: int) -> np.ndarray:
    """x (rate fs) band-limited to 0.45 fs and interpolated to K x fs: K * len(x) samples, float64."""
    x = np.asarray(x, dtype=np.float64)
    if oversampling == 1:
        return x.copy()
    return signal.resample_poly(x, oversampling, 1, window=lowpass(oversampling), padtype="edge")


def decimate(y: np.ndarray, oversampling: int) -> np.ndarray:
    """y (rate K x fs) anti-alias filtered and kept at every K-th sample: ceil(len(y) / K) samples."""
    y = np.asarray(y, dtype=np.float64)
    if oversampling == 1:
        return y.copy()
    return signal.resample_poly(y, 1, oversampling, window=lowpass(oversampling), padtype="edge")
