"""WaveNet, conditioning and streaming: shapes, causality, exact receptive field, paper parameter
counts, TorchScript, streaming == one-pass, FiLM identity at init, control validation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ampmodel.config import ModelConfigError, WaveNetConfig
from ampmodel.cost import count_parameters
from ampmodel.streaming import KnobStream, StreamingWaveNet, render
from ampmodel.loading import from_preset
from ampmodel.wavenet import WaveNet

SMALL = dict(channels=4, dilations=(1, 2, 4, 8), kernel_size=3)  # rf = 31
VARIANTS = [
    dict(),
    dict(activation="tanh"),
    dict(activation="softsign_gated", head_hidden=3),
    dict(conditioning="film"),
    dict(conditioning="film_out", head_hidden=3),
    dict(conditioning="concat", kernel_size=2),
    dict(conditioning="film", knob_gain=True, head_hidden=3),
    dict(conditioning="concat", knob_gain=True),
]
CONDITIONED = [v for v in VARIANTS if v.get("conditioning")]


def make(seed: int = 0, randomise_film: bool = True, **overrides) -> WaveNet:
    torch.manual_seed(seed)
    net = WaveNet(WaveNetConfig(**{**SMALL, **overrides}))
    if randomise_film and net.film is not None:
        # At init FiLM is the identity; give it real weights so conditioning paths are exercised.
        torch.nn.init.normal_(net.film.out.weight, std=0.5)
        torch.nn.init.normal_(net.film.out.bias, std=0.5)
    if randomise_film and net.gain is not None:  # likewise the knob gain (1 at init)
        torch.nn.init.normal_(net.gain.out.weight, std=0.5)
    return net


def controls_for(net: WaveNet, batch: int = 1, seed: int = 1):
    return torch.rand(batch, net.num_controls, generator=torch.Generator().manual_seed(seed)) if net.conditioned else None


@pytest.mark.parametrize(
    "name, params, rf", [("WaveNet1", 18_593, 2047), ("WaveNet2", 8_657, 2045), ("WaveNet3", 33_441, 2045)]
)
def test_paper_presets_have_exact_parameter_counts(name, params, rf):
    net = from_preset(name)
    assert sum(p.numel() for p in net.parameters()) == params
    assert net.receptive_field == rf


def test_from_preset_overrides_and_unknown_name():
    net = from_preset("WaveNet2", conditioning="film")
    assert net.cfg.conditioning == "film" and net.cfg.channels == 8
    with pytest.raises(ModelConfigError, match="WaveNet1"):
        from_preset("WaveNet9")


def assert_valid_causal_convolution(net, controls, length: int = 80, t: int = 40) -> None:
    """Output j of `net` depends on exactly inputs j..j+rf-1 (checked in float64: the oldest input
    reaches the output only through every layer's oldest tap, a product of small gains that float32
    can round away). Shared with the NAM family's tests."""
    net = net.double()
    rf = net.receptive_field
    x = torch.randn(2, 1, length, dtype=torch.float64)
    c = None if controls is None else controls.double()
    y = net(x, c)
    assert y.shape == (2, 1, length - rf + 1)
    # Output j sees inputs j..j+rf-1 (j+rf-1 is "now"). Perturb input t: it is the newest sample
    # of output t-rf+1 and the oldest of output t, so exactly outputs t-rf+1..t may change.
    x2 = x.clone()
    x2[:, :, t] += 1.0
    y2 = net(x2, c)
    first, last = t - rf + 1, t
    assert torch.equal(y2[..., :first], y[..., :first])  # causal: the past is untouched
    assert (y2[..., first] - y[..., first]).abs().min() > 1e-12  # immediate response
    assert (y2[..., last] - y[..., last]).abs().min() > 1e-12  # rf not shorter than claimed
    assert torch.equal(y2[..., last + 1 :], y[..., last + 1 :])  # rf not longer than claimed


@pytest.mark.parametrize("overrides", VARIANTS)
def test_output_is_valid_causal_convolution(overrides):
    net = make(**overrides)
    assert_valid_causal_convolution(net, controls_for(net, 2))


@pytest.mark.parametrize("overrides", VARIANTS)
def test_torchscript_matches_eager(overrides):
    net = make(**overrides)
    scripted = torch.jit.script(net)
    x = torch.randn(3, 1, 100)
    c = controls_for(net, 3)
    torch.testing.assert_close(scripted(x, c), net(x, c), rtol=0, atol=1e-6)


def papers_wavenet(net: WaveNet, x: torch.Tensor, controls) -> torch.Tensor:
    """The paper's network computed literally from `net`'s weights, for holding the fast path to it:
    input 1x1 conv (knobs as extra input channels with concat); per layer a dilated causal conv,
    FiLM of its output, the gate tanh(a) * sigmoid(b) (or tanh, softsign(a) * sigmoid(b)), FiLM of
    the gated output (film_out), a 1x1 residual conv added to the layer's input; every gated output
    is a skip; all skips, concatenated, go through one linear 1x1 mixer, then the tanh head and the
    knob gain where the net has them. No fused matmul, no tanh rewrite."""
    cfg = net.cfg
    if cfg.conditioning == "concat":
        x = torch.cat([x, controls[:, :, None].expand(-1, -1, x.size(2))], dim=1)
    h = F.conv1d(x, net.input_conv.weight, net.input_conv.bias)
    film = net.film(controls) if net.film is not None else None  # (B, layers, 2, features)
    p = cfg.pre_activation_channels
    skips = []
    for i, layer in enumerate(net.layers):
        z = F.conv1d(h, layer.dilated.weight, layer.dilated.bias, dilation=layer.dilated.dilation[0])
        if film is not None:
            z = film[:, i, 0, :p, None] * z + film[:, i, 1, :p, None]
        if cfg.activation == "tanh":
            g = torch.tanh(z)
        else:
            a, b = z.chunk(2, dim=1)
            g = (F.softsign(a) if cfg.activation == "softsign_gated" else torch.tanh(a)) * torch.sigmoid(b)
        if film is not None and film.size(3) > p:
            g = film[:, i, 0, p:, None] * g + film[:, i, 1, p:, None]
        skips.append(g)
        h = h[:, :, h.size(2) - g.size(2):] + F.conv1d(g, layer.residual.weight, layer.residual.bias)
    length = skips[-1].size(2)
    y = F.conv1d(torch.cat([s[:, :, s.size(2) - length:] for s in skips], dim=1), net.mixer.weight, net.mixer.bias)
    if net.head is not None:
        y = F.conv1d(torch.tanh(y), net.head[1].weight, net.head[1].bias)
    if net.gain is not None:
        y = y * net.gain(controls)
    return y


@pytest.mark.parametrize("overrides", VARIANTS)
def test_fast_path_computes_the_papers_wavenet(overrides):
    """The fused residual+mixer matmul and the CPU tanh rewrite change nothing but speed: held to the
    literal network in float64 by relative error (every weight off its init, so every term counts)."""
    net = make(**overrides)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
        x = torch.randn(2, 1, 200, dtype=torch.float64)
        c = controls_for(net, 2)
        c = None if c is None else c.double()
        net = net.double()
        expected = papers_wavenet(net, x, c)
        got = net(x, c)
    assert got.shape == expected.shape == (2, 1, 200 - net.receptive_field + 1)
    assert expected.abs().min() > 1e-6  # a relative check needs outputs away from zero
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=0)
    torch.testing.assert_close(net.float()(x.float(), None if c is None else c.float()), expected.float(),
                               rtol=1e-4, atol=1e-6)  # and in float32, where training runs


def test_gate_matches_reference_tanh_sigmoid():
    # The CPU path computes tanh via sigmoid; it must equal the paper's gate.
    net = make()
    layer = net.layers[0]
    x = torch.randn(2, 4, 50) * 3
    z = layer.dilated(x)
    a, b = z.chunk(2, dim=1)
    torch.testing.assert_close(layer.skip_output(x), torch.tanh(a) * torch.sigmoid(b), rtol=0, atol=1e-6)


def test_film_at_init_equals_unconditioned_network_with_same_weights():
    plain = make(seed=3)
    film = make(seed=4, randomise_film=False, conditioning="film")
    missing, unexpected = film.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("film.") for k in missing)
    x = torch.randn(2, 1, 90)
    torch.testing.assert_close(film(x, torch.rand(2, 4)), plain(x), rtol=0, atol=0)


def test_film_learns_from_the_first_step():
    net = make(randomise_film=False, conditioning="film")
    x = torch.randn(2, 1, 60)
    net(x, torch.rand(2, 4)).square().mean().backward()
    assert net.film.out.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("conditioning", ["film", "concat"])
def test_conditioned_output_depends_on_controls(conditioning):
    net = make(conditioning=conditioning)
    x = torch.randn(1, 1, 60)
    assert not torch.allclose(net(x, torch.zeros(1, 4)), net(x, torch.ones(1, 4)))


@pytest.mark.parametrize("conditioning", ["film", "concat"])
def test_bad_controls_raise_clear_errors(conditioning):
    net = make(conditioning=conditioning)
    x = torch.randn(2, 1, 40)
    with pytest.raises(ValueError, match="needs controls"):
        net(x)
    with pytest.raises(ValueError, match=r"shape \(batch, num_controls\) = \(2, 4\)"):
        net(x, torch.rand(1, 4))
    with pytest.raises(ValueError, match=r"shape"):
        net(x, torch.rand(2, 3))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        net(x, torch.full((2, 4), 5.0))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        net(x, torch.full((2, 4), float("nan")))


def test_unconditioned_model_ignores_controls():
    net = make()
    x = torch.randn(2, 1, 40)
    assert torch.equal(net(x, torch.rand(2, 4)), net(x))


def test_bad_input_shapes_raise():
    net = make()
    with pytest.raises(ValueError, match=r"\(batch, 1, samples\)"):
        net(torch.randn(2, 40))
    with pytest.raises(ValueError, match="receptive field is 31"):
        net(torch.randn(1, 1, 30))


def stream_in_random_blocks(stream: StreamingWaveNet, x: torch.Tensor, c, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    outs, start = [], 0
    while start < x.size(-1):
        n = int(rng.integers(1, 70))
        outs.append(stream.process(x[..., start : start + n], c))
        start += n
    return torch.cat(outs, dim=-1)


@pytest.mark.parametrize("overrides", VARIANTS)
def test_streaming_in_random_blocks_equals_one_pass(overrides):
    net = make(**overrides)
    x = torch.randn(2, 1, 700)
    c = controls_for(net, 2)
    expected = net(F.pad(x, (net.receptive_field - 1, 0)), c)
    stream = StreamingWaveNet(net, chunk_size=16)  # small chunks: long blocks are split too
    with torch.no_grad():
        got = stream_in_random_blocks(stream, x, c, seed=0)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        stream.reset()  # a reset stream starts from silence again
        torch.testing.assert_close(stream.process(x, c), expected, rtol=0, atol=1e-5)


def test_scripted_streaming_equals_one_pass_and_accepts_1d_blocks():
    net = make(conditioning="film")
    x = torch.randn(500)
    c = torch.rand(4)
    expected = net(F.pad(x.view(1, 1, -1), (net.receptive_field - 1, 0)), c.view(1, -1)).view(-1)
    stream = torch.jit.script(StreamingWaveNet(net))
    with torch.no_grad():
        torch.testing.assert_close(stream_in_random_blocks(stream, x, c, seed=1), expected, rtol=0, atol=1e-5)


def test_streaming_rejects_batch_change_without_reset():
    stream = StreamingWaveNet(make())
    stream.process(torch.randn(1, 1, 10))
    with pytest.raises(ValueError, match="reset"):
        stream.process(torch.randn(2, 1, 10))
    stream.reset()
    assert stream.process(torch.randn(2, 1, 10)).shape == (2, 1, 10)


def test_render_numpy_and_tensor():
    net = make(conditioning="concat")
    audio = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    knobs = [0.2, 0.5, 0.7, 1.0]
    out = render(net, audio, knobs, block_size=333)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == audio.shape
    with torch.no_grad():
        x = torch.from_numpy(audio).view(1, 1, -1)
        expected = net(F.pad(x, (net.receptive_field - 1, 0)), torch.tensor([knobs])).view(-1)
    np.testing.assert_allclose(out, expected.numpy(), rtol=0, atol=1e-5)
    assert isinstance(render(net, torch.from_numpy(audio), knobs), torch.Tensor)


@pytest.mark.parametrize("overrides", CONDITIONED)
def test_folding_the_knobs_into_the_weights_computes_the_same(overrides):
    net = make(**overrides)
    for p in net.parameters():  # every weight away from its init, so every folded term matters
        p.data += 0.2 * torch.randn_like(p)
    x = torch.randn(2, 1, 300)
    for seed in range(3):
        knobs = controls_for(net, 1, seed=seed)[0]
        folded = net.at_setting(knobs)
        assert not folded.conditioned and folded.cfg.conditioning == "none"
        with torch.no_grad():
            torch.testing.assert_close(folded(x), net(x, knobs.expand(2, -1)), rtol=0, atol=1e-5)
    assert count_parameters(folded) < count_parameters(net)  # the knob MLP (or knob inputs) are gone
    plain = make()
    assert plain.at_setting([0.5] * 4) is plain  # nothing to fold


@pytest.mark.parametrize("overrides", CONDITIONED)
def test_knob_stream_folds_each_knob_move_and_equals_conditioned_streaming(overrides):
    net = make(**overrides)
    x = torch.randn(1, 1, 600)
    settings = [torch.rand(4, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    reference, knob_stream = StreamingWaveNet(net), KnobStream(net)
    with torch.no_grad():
        for i, start in enumerate(range(0, 600, 200)):  # the knobs move every 200 samples
            block = x[..., start:start + 200]
            expected = reference.process(block, settings[i])
            torch.testing.assert_close(knob_stream.process(block, settings[i]), expected, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="one knob setting"):
        KnobStream(net).process(torch.randn(2, 1, 10), torch.rand(2, 4))
