"""What every WaveNet family shares: the layer protocol that one-pass inference, the streaming
engine (streaming.py), the cost counter and knob folding rely on.

A net is a stack of layers. Layer i is a dilated causal conv that consumes `history` past samples
of its input and is pointwise in time otherwise. Every family computes

    h = embed_input(x, controls)
    for each layer i:  h, share_i = layers[i](h, mix_weights()[i], layer_film(film, i), x)
    y = finish(sum of share_i)

where share_i is the layer's output share: its skip mapped linearly towards the output by
mix_weights()[i] (an (M, C_i) matrix), and x, the network's input audio, is passed to every layer
for the families that mix it in (NAM). Because the output is a sum over layers of linear maps of
the skips, the (B, L*C, T) concatenation of all skips is never built.

FiLM: `film_params(controls)` -> one tensor per call; `layer_film(film, i)` -> (B, 2, features_i),
scale and shift for layer i. Folding a knob setting into fixed weights (`at_setting`) builds an
unconditioned twin of the same family and lets the family fold its knob terms into the state dict.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .conditioning import FiLM, KnobGain, checked_controls
from .config import ModelConfigError, WaveNetConfig


def activate(z: Tensor, gated: bool, softsign: bool) -> Tensor:
    """tanh, or a gate: tanh(a) * sigmoid(b) (softsign(a) * sigmoid(b)) of the two halves a, b of z."""
    if gated:
        a, b = z.chunk(2, dim=1)
        gate = torch.sigmoid(b)
        if softsign:
            return F.softsign(a) * gate
        if a.is_cuda:
            return torch.tanh(a) * gate
        # CPU: torch's tanh kernel is several times slower than its sigmoid (25% of streaming
        # time), and tanh(a) = 2*sigmoid(2a) - 1, so tanh(a)*gate = 2*sigmoid(2a)*gate - gate.
        return torch.addcmul(-gate, torch.sigmoid(2.0 * a), gate, value=2.0)
    return torch.tanh(z) if z.is_cuda else 2.0 * torch.sigmoid(2.0 * z) - 1.0


def modulate(z: Tensor, film: Tensor) -> Tensor:
    """FiLM of (B, F, T) by film (B, 2, F): scale * z + shift."""
    return torch.addcmul(film[:, 1].unsqueeze(-1), z, film[:, 0].unsqueeze(-1))


def residual_and_share(x: Tensor, skip: Tensor, weight: Tensor, bias: Optional[Tensor], mix_weight: Tensor,
                       history: int) -> Tuple[Tensor, Tensor]:
    """A layer's residual output x + (weight @ skip + bias) and its output share mix_weight @ skip.

    One (C+M) x C batched matmul for both (several times faster on CPU than two 1x1 convs, same
    maths); the share gets no bias (the network adds its output bias once, in finish). The conv
    shortened the signal by `history`: the residual keeps the newest samples of the input x.
    """
    assert bias is not None  # (for TorchScript's Optional refinement)
    channels, m = weight.size(0), mix_weight.size(0)
    both = torch.baddbmm(F.pad(bias, (0, m)).view(1, -1, 1),
                         torch.cat([weight.squeeze(-1), mix_weight], dim=0).expand(skip.size(0), -1, -1), skip)
    return both[:, :channels] + x[:, :, history:], both[:, channels:]


def fold_film_into_conv(state: dict, prefix: str, scale: Tensor, shift: Tensor) -> None:
    """FiLM of a conv's output, s * (W x + b) + t, as the conv (s W) x + (s b + t), in `state`."""
    state[f"{prefix}.weight"] = state[f"{prefix}.weight"] * scale.view(-1, 1, 1)
    state[f"{prefix}.bias"] = state[f"{prefix}.bias"] * scale + shift


class WaveNetBase(nn.Module):
    """The shared half of WaveNet (paper family) and NamWaveNet (nam family); see the module docstring.

    A family sets `layers`, `film` and `mix_channels` and defines embed_input, mix_weights,
    layer_film, finish and fold_knobs. `cfg` is kept for introspection, not used in forward.
    """

    __jit_ignored_attributes__ = ["cfg"]

    def __init__(self, cfg: WaveNetConfig, family: str) -> None:
        super().__init__()
        if cfg.family != family:
            raise ModelConfigError(f"family: a '{cfg.family}' config builds no {type(self).__name__}; "
                                   "use ampmodel.wavenet.build_wavenet(cfg)")
        self.cfg = cfg
        self.receptive_field: int = cfg.receptive_field
        self.num_controls: int = cfg.num_controls
        self.conditioning: str = cfg.conditioning
        self.conditioned: bool = cfg.conditioning != "none"
        self.film: Optional[FiLM] = None
        self.gain: Optional[KnobGain] = KnobGain(cfg.num_controls) if cfg.knob_gain else None
        self.mix_channels: int = 1  # rows of every mix weight: what the summed shares have before finish

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
        length = x.size(2) - self.receptive_field + 1
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
