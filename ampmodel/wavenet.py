"""Feed-forward WaveNet of Damskägg, Juvela, Thuillier, Välimäki (ICASSP 2019, arXiv 1811.00334).

Shape contract: `WaveNet(cfg)(x (B,1,T), controls (B,num_controls) | None) -> (B,1,T-rf+1)` with
rf = cfg.receptive_field. Every convolution is "valid" (no padding), so output n depends on input
samples n..n+rf-1 of `x`, i.e. on the current sample and rf-1 past ones: callers that want an
output as long as the input left-pad it with rf-1 zeros (see `streaming.render`).

Structure (per the paper): 1x1 input conv 1->C; L residual layers of dilated causal conv C->2C,
gate tanh(a)*sigmoid(b), 1x1 residual conv C->C added to the layer input; the gated output of
every layer is a skip; the L*C skip channels go through a linear 1x1 mixer to 1 channel (or
mixer -> head_hidden, tanh, 1x1 -> 1 when cfg.head_hidden > 0).

Parameters keep the paper's layout (`mixer` is one Conv1d(L*C, M, 1)), but the mixer is applied
layer by layer, fused with each residual 1x1 (see ResidualLayer): same maths, no (B, L*C, T)
concatenation. State-dict keys: input_conv, layers.<i>.dilated, layers.<i>.residual, mixer,
head.1 (head_hidden > 0), film.hidden, film.out (film conditioning).

The layer protocol, one-pass forward and knob folding are shared with the NAM family
(layer_stack.WaveNetBase); `build_wavenet(cfg)` builds the family a config names.

Controls: a conditioned model (film/concat) requires valid controls; an unconditioned model
accepts and ignores them, because the data pipeline always supplies batch['controls'] and a
single-setting model is meant to ignore the (constant) knobs. Whether a single-setting model is
trained on multi-setting data is a data/config concern, checked where the run is assembled.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .conditioning import FiLM
from .config import GATED_ACTIVATIONS, PRESETS, ModelConfigError, WaveNetConfig
from .layer_stack import WaveNetBase, activate, fold_film_into_conv, modulate, residual_and_share
from .nam_wavenet import NamWaveNet


class ResidualLayer(nn.Module):
    """One dilated layer: input (B,C,T) -> (residual output (B,C,T'), mixer share (B,M,T')), T' = T-history.

    `history` = (kernel_size-1)*dilation is how many past samples the dilated conv consumes; the
    streaming engine keeps exactly that many past inputs per layer. The layer's gated output (its
    skip) is never returned: the network's linear mixer over all L*C skip channels equals the sum
    over layers of (mixer columns of this layer) @ skip, so each layer applies its M x C slice of
    the mixer together with its residual 1x1 conv, as one (C+M) x C matmul. That avoids building
    the (B, L*C, T) concatenation, which dominated CPU time and memory.
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
        """`audio` (the network's input) is part of the layer protocol; this family does not mix it in."""
        skip = self.skip_output(x, film)
        return residual_and_share(x, skip, self.residual.weight, self.residual.bias, mix_weight, self.history)


class WaveNet(WaveNetBase):
    """The paper family; see the module docstring."""

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

    # --- the layer protocol (layer_stack.WaveNetBase) ---

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


def build_wavenet(cfg: WaveNetConfig) -> WaveNetBase:
    """The network of the family `cfg.family` names: WaveNet (paper) or NamWaveNet (nam)."""
    return NamWaveNet(cfg) if cfg.family == "nam" else WaveNet(cfg)


def from_preset(name: str, **overrides) -> WaveNetBase:
    """A preset ('WaveNet1'/'WaveNet2'/'WaveNet3', 'nam-standard'/...), optionally with fields overridden."""
    if name not in PRESETS:
        raise ModelConfigError(f"unknown WaveNet preset '{name}'; choose one of {', '.join(PRESETS)}")
    return build_wavenet(dataclasses.replace(PRESETS[name], **overrides))
