"""Cost measures: counted MACs agree with the analytic formula; RTF and compute_cost behave."""

import pytest
import torch

from ampmodel.config import WaveNetConfig
from ampmodel.cost import (
    analytic_macs_per_sample,
    compute_cost,
    count_parameters,
    macs_per_sample,
    op_counts_per_sample,
    realtime_factor,
)
from ampmodel.wavenet import WaveNet, from_preset

SMALL = dict(channels=4, dilations=(1, 2, 4, 8, 16))


def test_count_parameters_of_presets_and_trainable_filter():
    net = from_preset("WaveNet2")
    assert count_parameters(net) == 8_657
    net.input_conv.weight.requires_grad_(False)
    assert count_parameters(net, trainable_only=True) == 8_657 - 8


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        dict(activation="tanh", kernel_size=2),
        dict(activation="softsign_gated", head_hidden=6),
        dict(conditioning="film"),
        dict(conditioning="concat", head_hidden=3),
    ],
)
def test_counted_macs_equal_the_formula(overrides):
    net = WaveNet(WaveNetConfig(**{**SMALL, **overrides}))
    assert macs_per_sample(net) == analytic_macs_per_sample(net) == analytic_macs_per_sample(net.cfg)


def test_wavenet1_macs_by_hand():
    # input 16 + 10 layers x (3*16*32 dilated + 16*16 residual) + mixer 160 = 18,096
    assert macs_per_sample(from_preset("WaveNet1")) == 16 + 10 * (3 * 16 * 32 + 16 * 16) + 160


def test_film_adds_one_fused_scale_shift_per_pre_activation():
    plain = WaveNet(WaveNetConfig(**SMALL))
    film = WaveNet(WaveNetConfig(**SMALL, conditioning="film"))
    extra = op_counts_per_sample(film).elementwise_per_sample - op_counts_per_sample(plain).elementwise_per_sample
    assert extra == len(SMALL["dilations"]) * 2 * SMALL["channels"]  # one addcmul per pre-activation


def test_realtime_factor_is_positive_and_restores_threads():
    net = WaveNet(WaveNetConfig(**SMALL, conditioning="film"))
    before = torch.get_num_threads()
    rtf = realtime_factor(net, seconds=0.2, block_seconds=0.05, threads=1, repeats=2)
    assert rtf > 0
    assert torch.get_num_threads() == before


def test_compute_cost_reports_everything():
    net = WaveNet(WaveNetConfig(**SMALL))
    cost = compute_cost(net, fs=48000)
    assert cost["params"] == count_parameters(net)
    assert cost["receptive_field_samples"] == 63
    assert cost["receptive_field_ms"] == pytest.approx(63 / 48)
    assert cost["macs_per_sample"] == analytic_macs_per_sample(net)
    assert cost["gmacs_per_audio_second"] == pytest.approx(cost["macs_per_sample"] * 48000 / 1e9)
    assert cost["rtf"] > 0 and cost["elementwise_per_sample"] > 0
