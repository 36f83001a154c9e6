"""Losses against closed forms."""

import math

import pytest
import torch

from ampmodel.losses import MultiResolutionSTFTLoss, dc_loss, esr, esr_parts, pre_emphasise


def test_pre_emphasis_is_first_order_fir_that_drops_the_first_sample():
    x = torch.randn(3, 1, 50)
    y = pre_emphasise(x, 0.95)
    assert y.shape == (3, 1, 49)  # x[0] has no predecessor inside the signal
    torch.testing.assert_close(y, x[..., 1:] - 0.95 * x[..., :-1])
    assert pre_emphasise(x, 0.0) is x


@pytest.mark.parametrize("coeff, freq", [(0.95, 100.0), (0.95, 5000.0), (0.85, 15000.0)])
def test_pre_emphasis_energy_gain_matches_frequency_response(coeff, freq):
    fs, n = 44100, 441000
    w = 2 * math.pi * freq / fs
    x = torch.sin(w * torch.arange(n, dtype=torch.float64))
    gain = pre_emphasise(x, coeff).square().sum() / x.square().sum()
    expected = 1 - 2 * coeff * math.cos(w) + coeff**2  # |1 - c e^{-jw}|^2
    assert gain.item() == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("a", [0.0, 0.5, 0.9, 1.0, 1.5, -1.0])
def test_esr_of_scaled_target_is_squared_gain_error(a):
    target = torch.randn(4, 1, 1000, dtype=torch.float64)
    assert esr(a * target, target, pre_emphasis=0.0).item() == pytest.approx((1 - a) ** 2, rel=1e-6, abs=1e-12)
    # Pre-emphasis is linear, so the same holds with it.
    assert esr(a * target, target, pre_emphasis=0.95).item() == pytest.approx((1 - a) ** 2, rel=1e-6, abs=1e-12)


def test_esr_of_silence_is_one_and_of_perfect_prediction_zero():
    target = torch.randn(2, 1, 500)
    assert esr(torch.zeros_like(target), target).item() == pytest.approx(1.0, rel=1e-6)
    assert esr(target, target).item() == 0.0


def test_esr_treats_the_batch_as_one_signal_and_parts_accumulate():
    target = torch.randn(6, 1, 400, dtype=torch.float64)
    pred = target + 0.1 * torch.randn_like(target)
    whole = esr(pred, target)
    error, energy = 0.0, 0.0
    for i in range(0, 6, 2):  # three "batches"
        e, t = esr_parts(pred[i : i + 2], target[i : i + 2])
        error, energy = error + e, energy + t
    assert (error / energy).item() == pytest.approx(whole.item(), rel=1e-9)
    by_hand = (pre_emphasise(target - pred, 0.95).square().sum() / pre_emphasise(target, 0.95).square().sum()).item()
    assert whole.item() == pytest.approx(by_hand, rel=1e-9)


def test_dc_loss_of_constant_offset():
    target = torch.randn(2, 1, 1000, dtype=torch.float64)
    target = target - target.mean()
    offset = 0.3
    expected = offset**2 / target.square().mean()
    assert dc_loss(target + offset, target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert dc_loss(target + 0.2 * torch.sin(torch.arange(1000.0)).double(), target).item() < 1e-4


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        esr(torch.zeros(1, 1, 10), torch.zeros(1, 1, 11))
    with pytest.raises(ValueError, match="same shape"):
        dc_loss(torch.zeros(10), torch.zeros(1, 10))


def test_stft_loss_zero_for_identical_positive_otherwise_and_differentiable():
    loss = MultiResolutionSTFTLoss()
    target = torch.randn(2, 1, 4096)
    assert loss(target, target).item() == pytest.approx(0.0, abs=1e-6)
    pred = (0.5 * target + 0.05 * torch.randn_like(target)).requires_grad_()
    value = loss(pred, target)
    assert value.item() > 0.1
    value.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    # exact zeros in the prediction must not produce NaN gradients
    zeros = torch.zeros_like(target, requires_grad=True)
    loss(zeros, target).backward()
    assert torch.isfinite(zeros.grad).all()


def test_stft_loss_rejects_too_short_signals():
    with pytest.raises(ValueError, match="too short"):
        MultiResolutionSTFTLoss()(torch.zeros(1, 1, 800), torch.zeros(1, 1, 800))


def test_per_item_parts_and_weights():
    target = torch.randn(3, 1, 200, dtype=torch.float64)
    pred = 0.5 * target
    error, energy = esr_parts(pred, target, 0.95, per_item=True)
    assert error.shape == energy.shape == (3,)
    torch.testing.assert_close(error / energy, torch.full((3,), 0.25, dtype=torch.float64))
    weight = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64).view(3, 1, 1)
    w_error, w_energy = esr_parts(pred, target, 0.95, weight=weight)
    assert w_error.item() == pytest.approx(float(error[0] + 2 * error[2]))
    assert esr(pred, target, weight=weight).item() == pytest.approx(0.25)
