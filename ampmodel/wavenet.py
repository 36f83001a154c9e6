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

Controls: a conditioned model (film/concat) requires valid controls; an unconditioned model
accepts and ignores them, because the data pipeline always supplies batch['controls'] and a
single-setting model is meant to ignore the (constant) knobs. Whether a single-setting model is
trained on multi-setting data is a data/config concern, checked where the run is assembled.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .conditioning import FiLM, checked_controls
from .config import GATED_ACTIVATIONS, PRESETS, ModelConfigError, WaveNetConfig


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
        z = torch.addcmul(film[:, 1, :p].unsqueeze(-1), z, film[:, 0, :p].unsqueeze(-1))
        g = self.activate(z)
        if film.size(2) > p:
            g = torch.addcmul(film[:, 1, p:].unsqueeze(-1), g, film[:, 0, p:].unsqueeze(-1))
        return g

    def activate(self, z: Tensor) -> Tensor:
        if self.gated:
            a, b = z.chunk(2, dim=1)
            gate = torch.sigmoid(b)
            if self.softsign:
                return F.softsign(a) * gate
            if a.is_cuda:
                return torch.tanh(a) * gate
            # CPU: torch's tanh kernel is several times slower than its sigmoid (25% of streaming
            # time), and tanh(a) = 2*sigmoid(2a) - 1, so tanh(a)*gate = 2*sigmoid(2a)*gate - gate.
            return torch.addcmul(-gate, torch.sigmoid(2.0 * a), gate, value=2.0)
        return torch.tanh(z) if z.is_cuda else 2.0 * torch.sigmoid(2.0 * z) - 1.0

    def forward(self, x: Tensor, mix_weight: Tensor, film: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        skip = self.skip_output(x, film)
        m = mix_weight.size(0)
        weight = torch.cat([self.residual.weight.squeeze(-1), mix_weight], dim=0)
        residual_bias = self.residual.bias
        assert residual_bias is not None  # (for TorchScript's Optional refinement)
        bias = F.pad(residual_bias, (0, m))  # the mixer bias is added once, by the network
        # As a batched matmul rather than a 1x1 conv: several times faster on CPU, same maths.
        both = torch.baddbmm(bias.view(1, -1, 1), weight.expand(skip.size(0), -1, -1), skip)
        # The conv shortened the signal by `history`: keep the newest samples of the input.
        residual = both[:, : self.channels] + x[:, :, self.history :]
        return residual, both[:, self.channels :]


class WaveNet(nn.Module):
    """See the module docstring. `cfg` is kept for introspection (`net.cfg`), not used in forward."""

    __jit_ignored_attributes__ = ["cfg"]

    def __init__(self, cfg: WaveNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.receptive_field: int = cfg.receptive_field
        self.num_controls: int = cfg.num_controls
        self.conditioning: str = cfg.conditioning
        self.conditioned: bool = cfg.conditioning != "none"
        self.concat_controls: bool = cfg.conditioning == "concat"

        c = cfg.channels
        self.cfg_channels: int = c
        input_channels = 1 + (cfg.num_controls if self.concat_controls else 0)
        self.input_conv = nn.Conv1d(input_channels, c, 1)
        self.layers = nn.ModuleList(
            [ResidualLayer(cfg, d) for d in cfg.dilations]
        )
        self.film: Optional[FiLM] = (
            FiLM(cfg.num_controls, cfg.film_hidden, cfg.layers, cfg.film_features)
            if cfg.film_features
            else None
        )
        self.mixer = nn.Conv1d(cfg.layers * c, cfg.head_hidden if cfg.head_hidden > 0 else 1, 1)
        self.head: Optional[nn.Sequential] = (
            nn.Sequential(nn.Tanh(), nn.Conv1d(cfg.head_hidden, 1, 1)) if cfg.head_hidden > 0 else None
        )

    # --- pieces shared with streaming.StreamingWaveNet (one implementation of the maths) ---

    @torch.jit.export
    def prepare_controls(self, controls: Optional[Tensor], batch: int) -> Optional[Tensor]:
        """Validated controls for a conditioned model, None for an unconditioned one."""
        if not self.conditioned:
            return None
        return checked_controls(controls, batch, self.num_controls, self.conditioning)

    @torch.jit.export
    def film_params(self, controls: Optional[Tensor]) -> Optional[Tensor]:
        """(B, layers, 2, features) scale/shift, or None without FiLM. Computed once per call."""
        film = self.film
        if film is None or controls is None:
            return None
        return film(controls)

    @torch.jit.export
    def embed_input(self, x: Tensor, controls: Optional[Tensor]) -> Tensor:
        """(B,1,T) audio -> (B,C,T); with concat conditioning the knobs are constant extra channels."""
        if self.concat_controls and controls is not None:
            knobs = controls.to(x.dtype).unsqueeze(-1).expand(-1, -1, x.size(2))
            x = torch.cat([x, knobs], dim=1)
        return self.input_conv(x)

    @torch.jit.export
    def mixer_slice(self, layer_index: int) -> Tensor:
        """The (M, C) block of the mixer weight that acts on layer `layer_index`'s skip channels."""
        c = self.cfg_channels
        return self.mixer.weight[:, layer_index * c : (layer_index + 1) * c, 0]

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

    # --- one-pass forward ---

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
        mixed = torch.zeros(x.size(0), self.mixer.out_channels, length, dtype=h.dtype, device=h.device)
        for i, layer in enumerate(self.layers):
            layer_film: Optional[Tensor] = None
            if film is not None:
                layer_film = film[:, i]
            h, share = layer(h, self.mixer_slice(i), layer_film)
            # Every skip is cropped to the final length: only its newest `length` samples count.
            mixed = mixed + share[:, :, share.size(2) - length :]
        return self.finish(mixed)


    # --- one knob setting, folded into fixed weights ---

    def at_setting(self, controls: Tensor | Sequence[float]) -> "WaveNet":
        """This network at one knob setting as an unconditioned WaveNet with the same output.

        FiLM is affine and sits next to linear maps, so it folds into them: a scale/shift of the
        dilated conv's output into that conv's weights and bias; a scale/shift of the gated output
        (film_out) into the residual 1x1 and this layer's mixer columns (the shift becomes bias);
        concatenated knobs (constant input channels) into the input conv's bias. The result costs
        per sample exactly what an unconditioned net of the same size costs: a knob change costs
        one fold (O(parameters)), not work per sample. An unconditioned net is returned as is.
        """
        if not self.conditioned:
            return self
        param = self.mixer.weight
        ctl = self.prepare_controls(torch.as_tensor(controls, dtype=param.dtype, device=param.device).reshape(1, -1), 1)
        assert ctl is not None
        folded = WaveNet(dataclasses.replace(self.cfg, conditioning="none")).to(device=param.device, dtype=param.dtype)
        c, p = self.cfg.channels, self.cfg.pre_activation_channels
        with torch.no_grad():
            state = {k: v.detach().clone() for k, v in self.state_dict().items() if not k.startswith("film.")}
            if self.concat_controls:
                weight = state["input_conv.weight"]  # (C, 1 + num_controls, 1)
                state["input_conv.bias"] += weight[:, 1:, 0] @ ctl[0]
                state["input_conv.weight"] = weight[:, :1].contiguous()
            film = self.film_params(ctl)
            for i in range(len(self.layers) if film is not None else 0):
                scale, shift = film[0, i, 0], film[0, i, 1]
                state[f"layers.{i}.dilated.weight"] *= scale[:p].view(-1, 1, 1)
                state[f"layers.{i}.dilated.bias"] = state[f"layers.{i}.dilated.bias"] * scale[:p] + shift[:p]
                if scale.numel() > p:  # film_out: the gated output g -> s * g + t feeds residual and mixer
                    s, t = scale[p:], shift[p:]
                    residual = state[f"layers.{i}.residual.weight"]  # (C, C, 1)
                    state[f"layers.{i}.residual.bias"] += residual[:, :, 0] @ t
                    state[f"layers.{i}.residual.weight"] = residual * s.view(1, -1, 1)
                    columns = state["mixer.weight"][:, i * c:(i + 1) * c, 0]  # a view: edited in place
                    state["mixer.bias"] += columns @ t
                    columns *= s
            folded.load_state_dict(state)
        return folded.train(self.training)


def from_preset(name: str, **overrides) -> WaveNet:
    """A paper preset ('WaveNet1'/'WaveNet2'/'WaveNet3'), optionally with config fields overridden."""
    if name not in PRESETS:
        raise ModelConfigError(f"unknown WaveNet preset '{name}'; choose one of {', '.join(PRESETS)}")
    return WaveNet(dataclasses.replace(PRESETS[name], **overrides))
