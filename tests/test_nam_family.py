"""The NAM WaveNet family (model.family = "nam"): its presets are NAM's own architectures (checked
against the installed neural-amp-modeler), and it runs the one streaming engine, knob folding,
TorchScript and the cost counter exactly like the paper family."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from ampmodel.config import PRESETS, ModelConfigError, WaveNetConfig
from ampmodel.cost import analytic_macs_per_sample, count_parameters, macs_per_sample, op_counts_per_sample
from ampmodel.loading import config_from_dict
from ampmodel.nam_wavenet import NamWaveNet
from ampmodel.streaming import KnobStream, StreamingWaveNet
from ampmodel.loading import build_wavenet, from_preset
from ampmodel.wavenet import WaveNet
from foundation.configs import to_dict
from foundation.errors import ConfigError
from tests.nam_0_12 import run_under_nam_0_12
from tests.test_wavenet import assert_valid_causal_convolution, stream_in_random_blocks
from training.run_config import model_from_mapping

SMALL = dict(family="nam", channels=4, array_channels=(3,), dilations=(1, 2, 4, 1, 2), array_layers=(3, 2),
             kernel_size=3, activation="tanh")  # rf = 21
VARIANTS = [
    dict(),
    dict(activation="gated"),
    dict(conditioning="film"),
    dict(conditioning="film", activation="gated", kernel_size=2, knob_gain=True),
    dict(array_channels=(), array_layers=(), conditioning="film"),  # one layer array
    dict(array_channels=(5, 2), array_layers=(), dilations=(1, 2, 1, 2, 1, 4)),  # three arrays, equal shares
    A2_LIKE := dict(kernel_sizes=(2, 4, 3, 5, 3), activation="leaky_relu", head_kernel_size=4,
                    head_scale=0.01),  # NAM's A2 in small, its head over time behind two arrays
    dict(A2_LIKE, array_channels=(), array_layers=(), conditioning="film"),  # one array, as A2 has
]
CONDITIONED = [v for v in VARIANTS if v.get("conditioning")]


def make(seed: int = 0, **overrides) -> NamWaveNet:
    """A small NAM-family net with every weight (FiLM too) moved off its init, so every term matters."""
    torch.manual_seed(seed)
    net = build_wavenet(WaveNetConfig(**{**SMALL, **overrides}))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net


def controls_for(net, batch: int = 1, seed: int = 1):
    return torch.rand(batch, 4, generator=torch.Generator().manual_seed(seed)) if net.conditioned else None


def test_presets_are_nams_trainer_architectures():
    """NAM's A1 architectures are neural-amp-modeler 0.12.3's trainer's (0.13 trains A2 only)."""
    found = run_under_nam_0_12("""
import json
from nam.train import core
from nam.models.wavenet import WaveNet
out = {}
for name in ("standard", "lite", "feather", "nano"):
    cfg = core.get_wavenet_config(core.Architecture(name))
    net = WaveNet(**cfg)
    out[name] = {"layers": cfg["layers_configs"], "head_scale": cfg["head_scale"], "rf": net.receptive_field,
                 "params": sum(p.numel() for p in net.parameters()), "weights": len(net._export_weights())}
print(json.dumps(out))
""")
    for name, reference in found.items():
        ours = from_preset(f"nam-{name}")
        assert ours.nam_config("0.5")["layers"] == reference["layers"]
        assert ours.nam_config("0.5")["head_scale"] == reference["head_scale"]
        assert count_parameters(ours) == reference["params"]
        assert len(ours.nam_weights()) == reference["weights"]  # weights + head_scale
        assert ours.receptive_field == reference["rf"]
    assert len(from_preset("nam-standard").nam_weights()) == 13_802  # NAM's count: 13,801 weights + head_scale


@pytest.mark.parametrize("overrides", VARIANTS)
def test_fast_path_computes_nams_own_wavenet(overrides):
    """The literal reference of this family is NAM's own code: neural-amp-modeler 0.13's WaveNet, loaded
    from our .nam config and weights (a conditioned net folded at a knob setting first), computes what ours does,
    in float64 to a relative 1e-9; so the per-layer head products in mix_weights, the fused matmul
    and the CPU tanh rewrite change nothing but speed."""
    nam_models = pytest.importorskip("nam.models", reason="`make test` installs neural-amp-modeler")
    net = make(**overrides)
    if net.conditioned:
        net = net.at_setting(controls_for(net, 1)[0])
    reference = nam_models.init_from_nam({"version": "0.7.0", "architecture": "WaveNet", "sample_rate": 48000,
                                          "config": net.nam_config(), "weights": net.nam_weights()})
    assert reference._export_config() == net.nam_config()  # NAM 0.13 writes back exactly our 0.7 config
    x = torch.randn(2, 1, 150, dtype=torch.float64)
    with torch.no_grad():
        expected = reference.double()(x[:, 0], pad_start=False)[:, None]
        got = net.double()(x)
    assert got.shape == expected.shape == (2, 1, 150 - net.receptive_field + 1)
    assert expected.abs().min() > 1e-6  # a relative check needs outputs away from zero
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=0)


@pytest.mark.parametrize("overrides", VARIANTS)
def test_output_is_valid_causal_convolution(overrides):
    net = make(**overrides)
    assert_valid_causal_convolution(net, controls_for(net, 2), length=net.receptive_field + 40,
                                    t=net.receptive_field + 5)


@pytest.mark.parametrize("overrides", VARIANTS)
def test_streaming_in_random_blocks_equals_one_pass(overrides):
    net = make(**overrides)
    x = torch.randn(2, 1, 400)
    c = controls_for(net, 2)
    expected = net(F.pad(x, (net.receptive_field - 1, 0)), c)
    with torch.no_grad():
        got = stream_in_random_blocks(StreamingWaveNet(net, chunk_size=16), x, c, seed=0)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("overrides", [VARIANTS[3], VARIANTS[5], VARIANTS[7]])
def test_torchscript_matches_eager_and_streams(overrides):
    net = make(**overrides)
    x = torch.randn(2, 1, 300)
    c = controls_for(net, 2)
    torch.testing.assert_close(torch.jit.script(net)(x, c), net(x, c), rtol=0, atol=1e-6)
    expected = net(F.pad(x, (net.receptive_field - 1, 0)), c)
    with torch.no_grad():
        got = stream_in_random_blocks(torch.jit.script(StreamingWaveNet(net)), x, c, seed=1)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("overrides", CONDITIONED)
def test_folding_the_knobs_gives_a_plain_nam_net_computing_the_same(overrides):
    net = make(**overrides)
    x = torch.randn(2, 1, 200)
    for seed in range(3):
        knobs = controls_for(net, 1, seed=seed)[0]
        folded = net.at_setting(knobs)
        assert isinstance(folded, NamWaveNet) and not folded.conditioned
        with torch.no_grad():
            torch.testing.assert_close(folded(x), net(x, knobs.expand(2, -1)), rtol=0, atol=1e-5)
    assert count_parameters(folded) == count_parameters(build_wavenet(folded.cfg))  # the knob MLP is gone
    reference, knob_stream = StreamingWaveNet(net), KnobStream(net)
    with torch.no_grad():
        for i, start in enumerate(range(0, 300, 100)):  # the knobs move every 100 samples
            block, knobs = x[:1, :, start:start + 100], controls_for(net, 1, seed=i)[0]
            torch.testing.assert_close(knob_stream.process(block, knobs), reference.process(block, knobs),
                                       rtol=0, atol=1e-5)


@pytest.mark.parametrize("overrides", [dict(), dict(activation="gated", kernel_size=2), dict(conditioning="film"),
                                       VARIANTS[5], VARIANTS[6], VARIANTS[7]])
def test_counted_macs_equal_the_formula_and_folded_film_costs_nothing(overrides):
    net = make(**overrides)
    assert macs_per_sample(net) == analytic_macs_per_sample(net) == analytic_macs_per_sample(net.cfg)
    if net.conditioned:
        assert op_counts_per_sample(net) == op_counts_per_sample(build_wavenet(net.at_setting([0.5] * 4).cfg))


def test_a2_presets_are_nams_packed_submodels():
    """nam-a2 and nam-a2-channels3 are the submodels neural-amp-modeler 0.13's A2 trainer fits
    (channels_8, channels_3): the same .nam config (0.7), parameters, weights and receptive field."""
    core = pytest.importorskip("nam.train.core", reason="`make test` installs neural-amp-modeler")
    from nam.train.lightning_module import PackedLightningModule

    packed = PackedLightningModule.init_from_config(core._get_packed_model_config()).net
    for index, preset in enumerate(["nam-a2-channels3", "nam-a2"]):  # NAM's submodel order
        theirs, ours = packed.extract_submodel(index), from_preset(preset)
        assert ours.nam_config() == theirs._export_config()
        assert count_parameters(ours) == count_parameters(theirs)
        assert len(ours.nam_weights()) == len(theirs._export_weights())
        assert ours.receptive_field == theirs.receptive_field == 6347
    assert count_parameters(from_preset("nam-a2")) == 12_145 and count_parameters(from_preset("nam-a2-channels3")) == 1_870


def test_a2_macs_by_hand():
    # rechannel 8 + 21 x (6*8*8 + 8 + 8*8) + 2 x (15*8*8 + 8 + 8*8): the shares are the skips themselves;
    # the 16-tap head runs once on their sum: 16*8
    assert analytic_macs_per_sample(PRESETS["nam-a2"]) == 8 + 21 * 456 + 2 * 1032 + 128


def test_nam_standard_macs_by_hand():
    # rechannel 16 + 10 x (3*16*16 + 16 + 16*16 + 16) + rechannel 16*8 + 10 x (3*8*8 + 8 + 8*8 + 8)
    assert analytic_macs_per_sample(PRESETS["nam-standard"]) == 16 + 10 * 1056 + 128 + 10 * 272


@pytest.mark.parametrize("overrides, message", [
    (dict(activation="softsign_gated"), "activation: 'softsign_gated' is not available in family 'nam'"),
    (dict(conditioning="concat"), "conditioning: 'concat' is not available in family 'nam'"),
    (dict(conditioning="film_out"), "conditioning: 'film_out' is not available in family 'nam'"),
    (dict(head_hidden=4), "head_hidden: family 'nam' has no head MLP"),
    (dict(array_layers=(2, 2)), r"array_layers: \[2, 2\] must give each of the 2 layer arrays"),
    (dict(array_layers=()), "array_layers: 5 dilations do not split equally into 2 layer arrays"),
    (dict(array_channels=(0,)), "array_channels: .* must all be >= 1"),
    (dict(array_channels=(999,)), "array_channels: 999 is above the limit 256"),
    (dict(array_channels=(2,) * 9), "array_channels: 9 entries is above the limit of 8"),
    (dict(family="paper"), "array_channels: layer arrays belong to family 'nam'"),
    (dict(family="lstm"), "family: 'lstm' is not one of paper, nam"),
    (dict(kernel_sizes=(3, 3)), "kernel_sizes: 2 kernel sizes for 5 dilations"),
    (dict(kernel_sizes=(3, 1, 3, 3, 3)), r"kernel_sizes: \[3, 1, 3, 3, 3\] must all be >= 2"),
    (dict(kernel_sizes=(3, 17, 3, 3, 3)), "kernel_sizes: 17 is above the limit 16"),
    (dict(head_kernel_size=0), "head_kernel_size: 0 must be >= 1"),
    (dict(head_kernel_size=17), "head_kernel_size: 17 is above the limit 16"),
    (dict(head_scale=0.0), r"head_scale: 0.0 must be in \(0, 1\]"),
    (dict(head_scale="big"), "head_scale: expected a number"),
    (dict(family="paper", array_channels=(), array_layers=(), head_kernel_size=16),
     "head_kernel_size: belongs to family 'nam'"),
    (dict(family="paper", array_channels=(), array_layers=(), activation="leaky_relu"),
     "activation: 'leaky_relu' is available in family 'nam' only"),
])
def test_bad_nam_configs_name_the_field(overrides, message):
    with pytest.raises(ModelConfigError, match=message):
        WaveNetConfig(**{**SMALL, **overrides})


def test_each_family_builds_its_own_class_and_configs_round_trip():
    cfg = WaveNetConfig(**SMALL)
    with pytest.raises(ModelConfigError, match="use ampmodel.loading.build_wavenet"):
        WaveNet(cfg)
    assert isinstance(build_wavenet(PRESETS["WaveNet2"]), WaveNet)
    assert config_from_dict(to_dict(cfg)) == cfg  # a model file's JSON lists come back as the config
    assert cfg.layer_arrays == ((4, (1, 2, 4)), (3, (1, 2)))
    assert model_from_mapping({"preset": "nam-standard", "array_channels": 6, "conditioning": "film"}) == \
        dataclasses.replace(PRESETS["nam-standard"], array_channels=(6,), conditioning="film")
    assert model_from_mapping({**SMALL, "array_channels": "3,2", "array_layers": "2,2,1"}).array_channels == (3, 2)
    a2 = model_from_mapping({"preset": "nam-a2", "conditioning": "film"})
    assert a2.kernel_sizes == PRESETS["nam-a2"].kernel_sizes and a2.conditioning == "film"
    # a new kernel_size or new layers leave A2's per-layer kernels behind (they fit its own layers only)
    assert model_from_mapping({"preset": "nam-a2", "kernel_size": 3}).layer_kernel_sizes == (3,) * 23
    assert model_from_mapping({"preset": "nam-a2", "dilations": "1..64"}).layer_kernel_sizes == (6,) * 7
    with pytest.raises(ConfigError, match="model.kernel_sizes: 2 kernel sizes for 23 dilations"):
        model_from_mapping({"preset": "nam-a2", "kernel_sizes": "6,6"})
    with pytest.raises(ConfigError, match="model.array_channels: '8,x' is not a list of integers"):
        model_from_mapping({"preset": "nam-standard", "array_channels": "8,x"})
