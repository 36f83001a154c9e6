"""The capture chain's filters (datamodules/resampling.py): flat passband, stopband at fs/2, aligned in time."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from datamodules import resampling

FS = 44100


@pytest.mark.parametrize("k", [2, 4, 8, 16])
def test_the_filter_is_flat_to_0_45_fs_and_100_db_down_from_fs_over_2(k: int) -> None:
    h = resampling.lowpass(k)
    assert len(h) % 2 == 1 and np.allclose(h, h[::-1])  # odd, symmetric: linear phase, whole-sample delay
    freqs, response = signal.freqz(h, worN=1 << 17, fs=k * FS)
    db = 20 * np.log10(np.abs(response) + 1e-300)
    assert np.abs(db[freqs <= resampling.PASSBAND_EDGE * FS]).max() < 1e-3
    assert db[freqs >= resampling.STOPBAND_EDGE * FS].max() < -resampling.STOPBAND_ATTENUATION_DB + 0.5


def test_upsampling_interpolates_a_band_limited_signal_and_decimation_undoes_it() -> None:
    t = np.arange(FS) / FS
    tone = np.sin(2 * np.pi * 15000 * t)  # where linear interpolation would droop by 3 dB
    up = resampling.upsample(tone, 4)
    exact = np.sin(2 * np.pi * 15000 * np.arange(4 * FS) / (4 * FS))
    assert len(up) == 4 * FS and np.abs(up - exact)[4000:-4000].max() < 1e-4  # no delay, no droop
    back = resampling.decimate(up, 4)
    assert len(back) == FS and np.abs(back - tone)[1000:-1000].max() < 1e-4
    assert np.array_equal(resampling.upsample(tone, 1), tone)  # K = 1: the chain as it was


def test_decimation_removes_what_lies_above_the_base_nyquist_frequency() -> None:
    t = np.arange(4 * FS) / (4 * FS)
    above = np.sin(2 * np.pi * 30000 * t)  # would fold to 14.1 kHz if point-sampled
    assert np.abs(above[::4]).max() > 0.5
    assert np.abs(resampling.decimate(above, 4))[1000:-1000].max() < 1e-4
