"""The feed-forward WaveNet of Damskägg, Juvela, Thuillier, Välimäki (ICASSP 2019, arXiv 1811.00334),
read top to bottom: the gate, one residual layer, the layer loop, the paper's network.

The paper's model: a 1x1 input conv 1 -> C; L residual layers, each a dilated causal conv C -> 2C,
the gate tanh(a) * sigmoid(b) of its two halves, and a 1x1 residual conv C -> C added to the
layer's input; the gated output of every layer is a skip, and all L*C skip channels go through one
linear 1x1 mixer to the output (or mixer -> head_hidden, tanh, 1x1 -> 1 when cfg.head_hidden > 0).
Knob conditioning (FiLM, concatenated knobs, a knob gain; conditioning.py) acts on the conv's
output, the gated output, the input or the output.

Shape contract: `WaveNet(cfg)(x (B,1,T), controls (B,num_controls) | None) -> (B,1,T-rf+1)` with
rf = cfg.receptive_field. Every convolution is "valid" (no padding): output n depends on inputs
n..n+rf-1, the current sample and rf-1 past ones; for an output as long as the input, left-pad it
with rf-1 zeros (streaming.render does).

Two things make it fast without changing the maths; tests/test_wavenet.py holds the result to the
paper's network written out literally (`papers_wavenet`, relative tolerance):
- The mixer is linear, so mixer @ concat(skips) = sum over layers of (that layer's M x C block of
  the mixer) @ skip. Each layer applies its block together with its residual 1x1, as one
  (C+M) x C matmul (`residual_and_share`), and the (B, L*C, T) concatenation is never built. The
  parameters keep the paper's layout: `mixer` is one Conv1d(L*C, M, 1).
- On CPU, tanh(a) is computed as 2 * sigmoid(2a) - 1 (`activate`): torch's CPU tanh is several
  times slower than its sigmoid.

The layer loop (`WaveNetBase`) is shared with Neural Amp Modeler's WaveNet (nam_wavenet.py), whose
layers take the input audio too and whose skips reach the output through per-array heads: a
family defines embed_input, mix_weights, layer_film, finish and the knob folding; the loop, the
streaming engine (streaming.py), the cost counter (cost.py) and knob folding run any family.
`ampmodel.loading.build_wavenet(cfg)` builds the family a config names.

State-dict keys: input_conv, layers.<i>.dilated, layers.<i>.residual, mixer, head.1 (head_hidden >
0), film.hidden, film.out (FiLM), gain.hidden, gain.out (knob gain).

Controls: a conditioned model requires valid controls; an unconditioned one accepts and ignores
them, because the data pipeline always supplies batch['controls'] and a single-setting model is
meant to ignore the (constant) knobs.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .conditioning import FiLM, KnobGain, checked_controls
from .config import GATED_ACTIVATIONS, ModelConfigError, WaveNetConfig


def activate(z: Tensor, gated: bool, softsign: bool) -> Tensor:
    """tanh, or a gate: tanh(a) * sigmoid(b) (softsign(a) * sigmoid(b)) of the two halves a, b of z."""
    if gated:
        a, b = z.chunk(2, dim=1)
        gate = torch.sigmoid(b)
        if softsign:
            return F.softsign(a) * gate
        if a.is_cuda:
            return torch.tanh(a) * gate
        # CPU: torch's tanh kernel is several times slower than its sigmoid (and the gate runs on
        # every sample of every layer), and tanh(a) = 2*sigmoid(2a) - 1, so
        # tanh(a)*gate = 2*sigmoid(2a)*gate - gate.
        return torch.addcmul(-gate, torch.sigmoid(2.0 * a), gate, value=2.0)
    return torch.tanh(z) if z.is_cuda else 2.0 * torch.sigmoid(2.0 * z) - 1.0


def modulate(z: Tensor, film: Tensor) -> Tensor:
    """FiLM of (B, F, T) by film (B, 2, F): scale * z + shift."""
    return torch.addcmul(film[:, 1].unsqueeze(-1), z, film[:, 0].unsqueeze(-1))


def residual_and_share(x: Tensor, skip: Tensor, weight: Tensor, bias: Optional[Tensor], mix_weight: Tensor,
                       history: int) -> Tuple[Tensor, Tensor]:
    """A layer's residual output x + (weight @ skip + bias) and its output share mix_weight @ skip
    (skip itself when mix_weight has no rows).

    One (C+M) x C batched matmul for both (several times faster on CPU than two 1x1 convs, same
    maths); the share gets no bias (the network adds its output bias once, in finish). The conv
    shortened the signal by `history`: the residual keeps the newest samples of the input x.
    """
    assert bias is not None  # (for TorchScript's Optional refinement)
    channels, m = weight.size(0), mix_weight.size(0)
    if m == 0:  # an empty mix weight: the share is the skip itself (NAM's A2 convolves their sum in finish)
        residual = torch.baddbmm(bias.view(1, -1, 1), weight.squeeze(-1).expand(skip.size(0), -1, -1), skip)
        return residual + x[:, :, history:], skip
    both = torch.baddbmm(F.pad(bias, (0, m)).view(1, -1, 1),
                         torch.cat([weight.squeeze(-1), mix_weight], dim=0).expand(skip.size(0), -1, -1), skip)
    return both[:, :channels] + x[:, :, history:], both[:, channels:]


def fold_film_into_conv(state: dict, prefix: str, scale: Tensor, shift: Tensor) -> None:
    """FiLM of a conv's output, s * (W x + b) + t, as the conv (s W) x + (s b + t), in `state`."""
    state[f"{prefix}.weight"] = state[f"{prefix}.weight"] * scale.view(-1, 1, 1)
    state[f"{prefix}.bias"] = state[f"{prefix}.bias"] * scale + shift


class ResidualLayer(nn.Module):
    """One layer of the paper: x (B,C,T) -> (x + residual(skip), mixer share of skip), both T-history long.

    skip = gate(dilated causal conv(x)); `history` = (kernel_size-1)*dilation is how many past samples
    the conv consumes (the streaming engine keeps exactly that many past inputs per layer). The skip
    itself is not returned: the layer applies its own block of the network's linear mixer to it,
    in the same matmul as its 1x1 residual conv (the module docstring says why).
    """

    def __init__(self, cfg: WaveNetConfig, dilation: int) -> None:
        super().__init__()
        channels = cfg.channels
        self.gated = cfg.activation in GATED_ACTIVATIONS
        self.softsign = cfg.activation == "softsign_gated"
        self.channels = channels
        self.pre_activation_channels = cfg.pre_activation_channels
        self.history = (cfg.kernel_size - 1) * dilation
        self.dilated = nn.Conv1d(channels, cfg.pre_activation_channels, cfg.kernel_size, dilation=dilation)
        self.residual = nn.Conv1d(channels, channels, 1)

    def skip_output(self, x: Tensor, film: Optional[Tensor] = None) -> Tensor:
        """Dilated conv, FiLM, gate, FiLM of the output: (B,C,T) -> skip (B,C,T-history).

        film: (B, 2, features) = scale, shift; its first pre_activation_channels act on the conv's
        output, any further `channels` on the gated output (conditioning film_out).
        """
        z = self.dilated(x)
        if film is None:
            return self.activate(z)
        p = self.pre_activation_channels
        g = self.activate(modulate(z, film[:, :, :p]))
        if film.size(2) > p:
            g = modulate(g, film[:, :, p:])
        return g

    def activate(self, z: Tensor) -> Tensor:
        return activate(z, self.gated, self.softsign)

    def forward(self, x: Tensor, mix_weight: Tensor, film: Optional[Tensor], audio: Tensor) -> Tuple[Tensor, Tensor]:
        """`mix_weight`: this layer's (M, C) block of the mixer. `audio` (the network's input) is part of
        the layer loop's signature; the paper's layers do not take it."""
        skip = self.skip_output(x, film)  # dilated causal conv -> gate (FiLM around the gate if conditioned)
        # the 1x1 residual conv added to x, and this layer's share of the linear mixer: one matmul
        return residual_and_share(x, skip, self.residual.weight, self.residual.bias, mix_weight, self.history)


class WaveNetBase(nn.Module):
    """The layer loop every family runs (the paper's WaveNet below, NAM's in nam_wavenet.py):

        h = embed_input(x, controls)
        for each layer i:  h, share_i = layers[i](h, mix_weights()[i], layer_film(film, i), x)
        y = finish(sum of share_i)          (times the knob gain, when the net has one)

    finish is pointwise in time, or (head_history > 0) consumes that many past sums of the shares.

    Layer i is a dilated causal conv consuming `history` past samples of its input, pointwise in time
    otherwise; share_i is its skip mapped linearly towards the output by mix_weights()[i], an
    (M, C_i) matrix; x, the input audio, goes to every layer for the families that mix it in (NAM).
    One-pass forward, the streaming engine (streaming.py), the cost counter (cost.py) and knob
    folding (`at_setting`) rely only on this loop.

    FiLM: `film_params(controls)` once per call; `layer_film(film, i)` -> (B, 2, features_i), scale
    and shift for layer i. A family sets `layers`, `film` and `mix_channels` and defines
    embed_input, mix_weights, layer_film, finish, fold_knobs and fold_output_gain. `cfg` is kept for
    introspection, not used in forward.
    """

    __jit_ignored_attributes__ = ["cfg"]

    def __init__(self, cfg: WaveNetConfig, family: str) -> None:
        super().__init__()
        if cfg.family != family:
            raise ModelConfigError(f"family: a '{cfg.family}' config builds no {type(self).__name__}; "
                                   "use ampmodel.loading.build_wavenet(cfg)")
        self.cfg = cfg
        self.receptive_field: int = cfg.receptive_field
        self.num_controls: int = cfg.num_controls
        self.conditioning: str = cfg.conditioning
        self.conditioned: bool = cfg.conditioning != "none"
        self.film: Optional[FiLM] = None
        self.gain: Optional[KnobGain] = KnobGain(cfg.num_controls) if cfg.knob_gain else None
        self.mix_channels: int = 1  # rows of every mix weight: what the summed shares have before finish
        # Past samples of the summed shares that finish consumes (a head conv over time: NAM's A2); the
        # receptive field counts them, the streaming engine keeps them.
        self.head_history: int = 0

    @torch.jit.export
    def prepare_controls(self, controls: Optional[Tensor], batch: int) -> Optional[Tensor]:
        """Validated controls for a conditioned model, None for an unconditioned one."""
        if not self.conditioned:
            return None
        return checked_controls(controls, batch, self.num_controls, self.conditioning)

    @torch.jit.export
    def film_params(self, controls: Optional[Tensor]) -> Optional[Tensor]:
        """FiLM scale/shift of all layers (see layer_film), or None without FiLM. Once per call."""
        film = self.film
        if film is None or controls is None:
            return None
        return film(controls)

    @torch.jit.export
    def output(self, mixed: Tensor, controls: Optional[Tensor]) -> Tensor:
        """finish(summed shares), times the knob gain when the net has one."""
        y = self.finish(mixed)
        gain = self.gain
        if gain is not None and controls is not None:
            y = y * gain(controls).to(y.dtype)
        return y

    def forward(self, x: Tensor, controls: Optional[Tensor] = None) -> Tensor:
        if x.dim() != 3 or x.size(1) != 1:
            raise ValueError("WaveNet input must have shape (batch, 1, samples), got " + str(x.shape))
        if x.size(2) < self.receptive_field:
            raise ValueError(
                "input has " + str(x.size(2)) + " samples but the receptive field is " + str(self.receptive_field)
                + "; give at least that many (left-pad with rf-1 zeros for a same-length output)"
            )
        ctl = self.prepare_controls(controls, x.size(0))
        film = self.film_params(ctl)
        h = self.embed_input(x, ctl)
        length = x.size(2) - self.receptive_field + 1 + self.head_history  # of the summed shares
        mixed = torch.zeros(x.size(0), self.mix_channels, length, dtype=h.dtype, device=h.device)
        mix = self.mix_weights()
        for i, layer in enumerate(self.layers):
            h, share = layer(h, mix[i], self.layer_film(film, i), x)
            # Every share is cropped to the final length: only its newest `length` samples count.
            mixed = mixed + share[:, :, share.size(2) - length :]
        return self.output(mixed, ctl)

    def at_setting(self, controls: Tensor | Sequence[float]) -> "WaveNetBase":
        """This network at one knob setting as an unconditioned net of its family with the same output.

        FiLM is affine and sits next to linear maps, so it folds into them (each family's
        fold_knobs says where); a knob change then costs one fold (O(parameters)), not work per
        sample. An unconditioned net is returned as is.
        """
        if not self.conditioned:
            return self
        param = next(self.parameters())
        ctl = self.prepare_controls(torch.as_tensor(controls, dtype=param.dtype, device=param.device).reshape(1, -1), 1)
        assert ctl is not None
        twin = type(self)(dataclasses.replace(self.cfg, conditioning="none", knob_gain=False))
        folded = twin.to(device=param.device, dtype=param.dtype)
        with torch.no_grad():
            state = {k: v.detach().clone() for k, v in self.state_dict().items()
                     if not k.startswith(("film.", "gain."))}
            self.fold_knobs(state, ctl)
            if self.gain is not None:
                self.fold_output_gain(state, float(self.gain(ctl)))
            folded.load_state_dict(state)
        return folded.train(self.training)

    def fold_knobs(self, state: dict, controls: Tensor) -> None:
        """Fold the conditioning at `controls` (1, num_controls) into `state` (film.* keys removed)."""
        raise NotImplementedError

    def fold_output_gain(self, state: dict, gain: float) -> None:
        """Scale the family's last linear map in `state` so the whole output is `gain` times larger."""
        raise NotImplementedError

    def layer_films(self, controls: Tensor) -> List[Tensor]:
        """Per layer, FiLM (2, features_i) at one knob setting (1, num_controls): for folding."""
        film = self.film_params(controls)
        assert film is not None
        found = [self.layer_film(film, i) for i in range(len(self.layers))]
        return [f[0] for f in found if f is not None]


class WaveNet(WaveNetBase):
    """The paper's network (family "paper"): input 1x1 conv, ResidualLayers, linear mixer (and head)."""

    def __init__(self, cfg: WaveNetConfig) -> None:
        super().__init__(cfg, "paper")
        self.concat_controls: bool = cfg.conditioning == "concat"
        c = cfg.channels
        self.cfg_channels: int = c
        input_channels = 1 + (cfg.num_controls if self.concat_controls else 0)
        self.input_conv = nn.Conv1d(input_channels, c, 1)
        self.layers = nn.ModuleList(
            [ResidualLayer(cfg, d) for d in cfg.dilations]
        )
        if cfg.film_features:
            self.film = FiLM(cfg.num_controls, cfg.film_hidden, cfg.layers, cfg.film_features)
        self.mix_channels = cfg.head_hidden if cfg.head_hidden > 0 else 1
        self.mixer = nn.Conv1d(cfg.layers * c, self.mix_channels, 1)
        self.head: Optional[nn.Sequential] = (
            nn.Sequential(nn.Tanh(), nn.Conv1d(cfg.head_hidden, 1, 1)) if cfg.head_hidden > 0 else None
        )

    # --- the layer loop's hooks (WaveNetBase) ---

    @torch.jit.export
    def embed_input(self, x: Tensor, controls: Optional[Tensor]) -> Tensor:
        """(B,1,T) audio -> (B,C,T); with concat conditioning the knobs are constant extra channels."""
        if self.concat_controls and controls is not None:
            knobs = controls.to(x.dtype).unsqueeze(-1).expand(-1, -1, x.size(2))
            x = torch.cat([x, knobs], dim=1)
        return self.input_conv(x)

    @torch.jit.export
    def mix_weights(self) -> List[Tensor]:
        """Per layer, the (M, C) block of the mixer weight that acts on that layer's skip channels."""
        c = self.cfg_channels
        return [self.mixer.weight[:, i * c : (i + 1) * c, 0] for i in range(len(self.layers))]

    @torch.jit.export
    def layer_film(self, film: Optional[Tensor], i: int) -> Optional[Tensor]:
        return None if film is None else film[:, i]

    @torch.jit.export
    def finish(self, mixed: Tensor) -> Tensor:
        """Summed per-layer mixer shares (B,M,T) -> output (B,1,T): mixer bias, optional head."""
        bias = self.mixer.bias
        assert bias is not None  # (for TorchScript's Optional refinement)
        y = mixed + bias.view(1, -1, 1)
        head = self.head
        if head is not None:
            y = head(y)
        return y

    def fold_output_gain(self, state: dict, gain: float) -> None:
        last = "head.1" if self.head is not None else "mixer"  # the output is linear in the last conv
        state[f"{last}.weight"] = state[f"{last}.weight"] * gain
        state[f"{last}.bias"] = state[f"{last}.bias"] * gain

    def fold_knobs(self, state: dict, controls: Tensor) -> None:
        """A scale/shift of the dilated conv's output folds into that conv; one of the gated output
        (film_out) into the residual 1x1 and this layer's mixer columns (the shift becomes bias);
        concatenated knobs (constant input channels) into the input conv's bias."""
        c, p = self.cfg.channels, self.cfg.pre_activation_channels
        if self.concat_controls:
            weight = state["input_conv.weight"]  # (C, 1 + num_controls, 1)
            state["input_conv.bias"] += weight[:, 1:, 0] @ controls[0]
            state["input_conv.weight"] = weight[:, :1].contiguous()
        for i, (scale, shift) in enumerate(self.layer_films(controls) if self.film is not None else []):
            fold_film_into_conv(state, f"layers.{i}.dilated", scale[:p], shift[:p])
            if scale.numel() > p:  # film_out: the gated output g -> s * g + t feeds residual and mixer
                s, t = scale[p:], shift[p:]
                residual = state[f"layers.{i}.residual.weight"]  # (C, C, 1)
                state[f"layers.{i}.residual.bias"] += residual[:, :, 0] @ t
                state[f"layers.{i}.residual.weight"] = residual * s.view(1, -1, 1)
                columns = state["mixer.weight"][:, i * c:(i + 1) * c, 0]  # a view: edited in place
                state["mixer.bias"] += columns @ t
                columns *= s
