"""Real-ngspice tests of the Bassman netlist and runner (tiny inputs at 16 kHz: ~1 min total)."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules.config import PotSettings
from datamodules.netlist import MIN_POT_OHMS, TEMPLATE_PATH, netlist_hash, pot_values, render_netlist, taper
from datamodules.spice import SpiceError, ngspice_version, operating_point, simulate
from foundation.errors import AmpStudyError

FS = 16000  # low rate keeps ngspice runs short; the circuit does not care

# Rest voltages commonly quoted from the voltage annotations on Fender's 5F6-A drawing, for a
# 325 V preamp supply (see benchmarks/spice_sanity.py for the caveat on their provenance).
# A 20 % band allows for tube spread (Fender's own tolerance) and the fitted 12AY7 model.
SCHEMATIC_DC = {"p1n": 160.0, "p2a": 180.0, "k2b": 185.0}


def plucks(seconds: float, peak_volts: float) -> np.ndarray:
    """Decaying plucked-string-like notes, one every 0.29 s, scaled to `peak_volts`."""
    n = int(seconds * FS)
    t = np.arange(n) / FS
    x = np.zeros(n)
    for k, start in enumerate(np.arange(0.0, seconds, 0.29)):
        f0 = (82.4, 110.0, 146.8, 196.0)[k % 4]
        on = t >= start
        tt = t[on] - start
        x[on] += sum(np.sin(2 * np.pi * h * f0 * tt) / h for h in range(1, 6)) * np.exp(-4 * tt)
    return peak_volts * x / np.abs(x).max()


def test_ngspice_is_new_enough_for_xspice_filesource() -> None:
    import re

    version = ngspice_version()
    assert re.fullmatch(r"ngspice-\d+(\.\d+)?\S*", version), version
    assert int(re.match(r"ngspice-(\d+)", version).group(1)) >= 30, f"{version}: filesource/linearize need >= 30"


def test_taper_law_and_min_resistance() -> None:
    assert taper(0.0, "audio") == 0.0 and taper(1.0, "audio") == pytest.approx(1.0)
    assert taper(0.5, "audio") == pytest.approx(0.1)  # 10 % "A" taper at half rotation
    assert taper(0.5, "linear") == 0.5
    for knob in (0.0, 1.0):
        values = pot_values(PotSettings(knob, knob, knob, knob))
        assert min(values.values()) >= MIN_POT_OHMS
    full = pot_values(PotSettings(volume=1.0))
    assert full["r_voln_top"] == MIN_POT_OHMS and full["r_voln_bot"] == pytest.approx(1e6)


def test_render_is_deterministic_and_depends_on_pots() -> None:
    a = render_netlist(PotSettings())
    assert netlist_hash(a) == netlist_hash(render_netlist(PotSettings()))
    assert netlist_hash(a) != netlist_hash(render_netlist(PotSettings(treble=0.6)))
    assert "${" not in a and "Ain in" not in a  # all placeholders filled; DC input for .op


def test_sine_in_gives_aligned_sine_out() -> None:
    """Length, dtype, sample-grid alignment, period and gain of a small 500 Hz tone."""
    n, onset, f0, amp = int(0.25 * FS), 400, 500.0, 0.05
    x = np.zeros(n)
    x[onset:] = amp * np.sin(2 * np.pi * f0 * np.arange(n - onset) / FS)
    y = simulate(x, FS, PotSettings(), workers=1)
    assert y.shape == x.shape and y.dtype == np.float64
    # At rest the tone-stack output is exactly 0 V (capacitor-coupled); the tone starts at
    # sample `onset` with sin(0) = 0, so sample onset+1 is the first one that can respond.
    assert np.abs(y[:onset]).max() < 1e-6
    assert abs(y[onset + 1]) > 1e-3
    steady = y[int(0.15 * FS):]  # past the coupling-capacitor transients
    period = int(FS / f0)  # 32 samples
    assert np.abs(steady[period:] - steady[:-period]).max() < 0.02 * np.abs(steady).max()
    spectrum = np.abs(np.fft.rfft(steady * np.hanning(len(steady))))
    assert np.fft.rfftfreq(len(steady), 1 / FS)[np.argmax(spectrum)] == pytest.approx(f0, abs=10)
    gain = np.abs(steady).max() / amp  # ~15 at these knob settings
    assert 3 < gain < 60


def test_chunked_matches_single_run() -> None:
    x = plucks(1.2, 1.0)  # drives V2A hard: the toughest case for chunk joins
    pots = PotSettings(volume=0.8)
    whole = simulate(x, FS, pots, chunk_seconds=10.0, workers=1)
    peak = np.abs(whole).max()
    calls = []
    chunked = simulate(x, FS, pots, chunk_seconds=0.4, warmup_seconds=0.3, workers=2,
                       progress=lambda done, total: calls.append((done, total)))
    err_db = 20 * np.log10(np.abs(chunked - whole).max() / peak)
    print(f"\nchunked vs single run: max error {err_db:.1f} dB re peak {peak:.1f} V")
    assert err_db < -60  # measured about -69 dB; solver noise at hard-clipping edges
    assert calls[0] == (0, 3) and calls[-1] == (3, 3)
    # The warm-up is what makes this work: without it the joins are grossly wrong.
    cold = simulate(x, FS, pots, chunk_seconds=0.4, warmup_seconds=0.0, workers=2)
    assert 20 * np.log10(np.abs(cold - whole).max() / peak) > -30


def test_treble_changes_high_frequency_energy() -> None:
    rng = np.random.default_rng(0)
    noise = 0.05 * rng.standard_normal(int(0.3 * FS))
    share_db = {}
    for treble in (0.0, 1.0):
        y = simulate(noise, FS, PotSettings(treble=treble), workers=1)[int(0.05 * FS):]
        power = np.abs(np.fft.rfft(y)) ** 2
        freqs = np.fft.rfftfreq(len(y), 1 / FS)
        share_db[treble] = 10 * np.log10(power[freqs > 3000].sum() / power.sum())
    print(f"\nshare of output power above 3 kHz: {share_db}")
    assert share_db[1.0] - share_db[0.0] > 6  # measured about 11 dB


def test_operating_point_near_schematic() -> None:
    op = operating_point(PotSettings())
    print(f"\noperating point: {op}")
    for node, volts in SCHEMATIC_DC.items():
        assert abs(op[node] - volts) < 0.2 * volts, (node, op[node], volts)
    assert 0.5 < op["k1"] < 5 and 0.5 < op["k2a"] < 3  # cathode bias of the gain stages


def test_cut_off_stage_is_rejected() -> None:
    cut_off = TEMPLATE_PATH.read_text().replace("Rk2a k2a 0 820", "Rk2a k2a 0 10meg")
    with pytest.raises(SpiceError, match="V2A.*cut off or saturated"):
        operating_point(PotSettings(), template=cut_off)


def test_missing_ngspice_names_the_install_command(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SpiceError, match="apt-get install ngspice"):
        simulate(np.zeros(100), FS, PotSettings(), workers=1)
    with pytest.raises(AmpStudyError, match="apt-get"):
        ngspice_version()


def test_broken_netlist_is_a_clear_error() -> None:
    broken = TEMPLATE_PATH.read_text().replace("Rload out 0 1meg",
                                               "Rload out 0 1meg\nXnone out 0 no_such_tube")
    with pytest.raises(SpiceError, match="unknown subckt"):
        simulate(np.zeros(100), FS, PotSettings(), workers=1, template=broken)


def test_non_converging_transient_is_a_clear_error() -> None:
    # A bang-bang current source chattering around the input: fine at DC, hopeless in time.
    relay = "Rload out 0 1meg\nBrelay q 0 I = sgn(v(q) - v(in))\nCq q 0 1p\nRq q 0 1meg"
    broken = TEMPLATE_PATH.read_text().replace("Rload out 0 1meg", relay)
    x = 0.1 * np.sin(2 * np.pi * 500 * np.arange(800) / FS)
    with pytest.raises(SpiceError, match="(?s)did not converge.*[Tt]imestep too small"):
        simulate(x, FS, PotSettings(), workers=1, template=broken)


def test_nan_input_is_rejected() -> None:
    x = np.zeros(100)
    x[10] = np.nan
    with pytest.raises(SpiceError, match="NaN"):
        simulate(x, FS, PotSettings(), workers=1)


def test_many_jobs_run_through_one_pool_and_equal_single_runs() -> None:
    import dataclasses

    from datamodules.spice import SpiceJob, plan_chunks, simulate_many

    x = plucks(0.5, 0.5)
    jobs = [SpiceJob(x, PotSettings()), SpiceJob(x[:3000], PotSettings(treble=1.0))]
    reports = []
    outputs = simulate_many(jobs, FS, chunk_seconds=0.2, warmup_seconds=0.1, workers=2,
                            progress=lambda p: reports.append(dataclasses.replace(p)))
    for job, out in zip(jobs, outputs):
        alone = simulate(job.x_volts, FS, job.pots, chunk_seconds=0.2, warmup_seconds=0.1, workers=1)
        np.testing.assert_array_equal(out, alone)
    assert reports[0].done_seconds == 0 and reports[0].chunks_total == 3 + 1
    assert reports[-1].done_seconds == pytest.approx((len(x) + 3000) / FS) and reports[-1].jobs_done == 2
    assert [p.jobs_done for p in reports] == sorted(p.jobs_done for p in reports)
    # equal chunk sizes: no short last chunk that leaves a worker idle
    assert [e - s for _, s, e in plan_chunks(1000, 1000, 0.3, 0.0)] == [250, 250, 250, 250]


def test_the_default_warm_up_keeps_chunk_joins_at_the_solver_floor() -> None:
    """Sized by benchmarks/spice_speed.py --sections warmup: with bass and middle up and treble down
    (the setting slowest to settle) the default warm-up joins chunks as well as a long one does, and
    a much shorter one does measurably worse."""
    from datamodules.config import SimulationConfig

    x = plucks(1.2, 1.0)
    pots = PotSettings(volume=0.5, treble=0.0, bass=1.0, middle=1.0)
    whole = simulate(x, FS, pots, chunk_seconds=10.0, workers=1)

    def join_error_db(warmup: float) -> float:
        chunked = simulate(x, FS, pots, chunk_seconds=0.4, warmup_seconds=warmup, workers=2)
        return 20 * np.log10(np.abs(chunked - whole).max() / np.abs(whole).max())

    default, long, short = (join_error_db(w) for w in (SimulationConfig.warmup_seconds, 0.8, 0.03))
    print(f"\njoin error: default {default:.1f} dB, 0.8 s {long:.1f} dB, 0.03 s {short:.1f} dB")
    assert default < long + 3 and short > long + 6


def test_the_oversampled_path_is_a_direct_fast_simulation_then_the_same_decimation() -> None:
    from datamodules import resampling

    x = plucks(0.25, 1.0)
    pots = PotSettings(volume=0.8)
    oversampled = simulate(x, FS, pots, oversampling=4, workers=1, chunk_seconds=10.0)
    # by hand: interpolate, simulate at 4 fs with the same largest step (1/4 sample at fs), decimate
    direct = simulate(resampling.upsample(x, 4), 4 * FS, pots, max_step_fraction=1.0, workers=1,
                      chunk_seconds=10.0)
    np.testing.assert_array_equal(oversampled, resampling.decimate(direct, 4))
    assert oversampled.shape == x.shape


def test_oversampling_keeps_distortion_products_above_fs_over_2_from_folding_back() -> None:
    """A tone driven into clipping makes harmonics past fs/2; point-sampled (K = 1) they fold onto
    non-harmonic frequencies, band-limited (K = 4) they are filtered out first."""
    f0, seconds = 2500.0, 0.3  # whole Hz on 4 Hz bins of the last 0.25 s
    x = 0.5 * np.sin(2 * np.pi * f0 * np.arange(int(seconds * FS)) / FS)

    def non_harmonic_db(k: int) -> float:
        y = simulate(x, FS, PotSettings(volume=1.0), oversampling=k, workers=2, chunk_seconds=10.0)
        tail = y[-FS // 4:] - y[-FS // 4:].mean()
        from scipy.signal import windows

        power = np.abs(np.fft.rfft(tail * windows.blackmanharris(len(tail)))) ** 2
        freqs = np.fft.rfftfreq(len(tail), 1 / FS)
        harmonic = np.min(np.abs(freqs[:, None] - f0 * np.arange(0, 4)[None, :]), axis=1) <= 16
        return 10 * np.log10(power[~harmonic].sum() / power.sum())

    point_sampled, band_limited = non_harmonic_db(1), non_harmonic_db(4)
    print(f"\nnon-harmonic energy: K=1 {point_sampled:.1f} dB, K=4 {band_limited:.1f} dB")
    assert point_sampled > -40 and band_limited < point_sampled - 20
