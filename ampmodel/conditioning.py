"""Conditioning a WaveNet on the amp's knob positions (volume, treble, bass, middle in 0..1).

Two pieces, both TorchScript-able:
- `checked_controls`: the one place that validates a `controls` argument, so every entry point
  (one-pass forward, streaming) fails with the same message.
- `FiLM`: a small MLP from the knob positions to a per-layer scale and shift of each layer's
  pre-activation (the dilated-conv output). Its last layer starts at zero, so scale=1 and shift=0
  and a FiLM-conditioned WaveNet computes exactly what the unconditioned one with the same
  weights computes until training moves it.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn


def checked_controls(controls: Optional[Tensor], batch: int, num_controls: int, conditioning: str) -> Tensor:
    """Return `controls` as a (batch, num_controls) tensor of knob positions, or raise ValueError.

    Only called for conditioned models: an unconditioned model never looks at controls.
    """
    if controls is None:
        raise ValueError(
            "this WaveNet is conditioned (conditioning='" + conditioning + "') and needs controls: pass a (batch, "
            + str(num_controls) + ") tensor of knob positions in [0, 1] (e.g. batch['controls']), "
            "or build the model with conditioning='none'"
        )
    if controls.dim() != 2 or controls.size(0) != batch or controls.size(1) != num_controls:
        raise ValueError(
            "controls must have shape (batch, num_controls) = (" + str(batch) + ", " + str(num_controls)
            + "), got " + str(controls.shape) + "; one row of knob positions per input signal"
        )
    in_range = (controls >= 0.0) & (controls <= 1.0)  # also rejects NaN
    if controls.device.type != "cpu":
        # Reading the answer on the host would make every training step wait for the GPU: the device
        # checks it and fails the run with this message instead.
        torch._assert_async(in_range.all(), "controls must be knob positions in [0, 1] (0 = fully counter-clockwise)")
        return controls
    if not bool(in_range.all()):
        raise ValueError(
            "controls must be knob positions in [0, 1] (0 = fully counter-clockwise); got values from "
            + str(float(controls.min())) + " to " + str(float(controls.max()))
            + " - rescale dial numbers (e.g. 0..10) by dividing by their full scale"
        )
    return controls


class FiLM(nn.Module):
    """knob positions (B, num_controls) -> (B, layers, 2, features): [:, i, 0] scale, [:, i, 1] shift.

    One shared MLP for all layers (rather than one per layer) keeps the parameter cost small
    next to a 8-33k parameter WaveNet: num_controls*hidden + hidden + hidden*layers*2*features.
    """

    def __init__(self, num_controls: int, hidden: int, layers: int, features: int) -> None:
        super().__init__()
        self.layers = layers
        self.features = features
        self.hidden = nn.Linear(num_controls, hidden)
        self.out = nn.Linear(hidden, layers * 2 * features)
        # Zero output layer: scale = 1 + 0, shift = 0 at init (identity modulation). The hidden
        # layer still learns because the output layer's gradient is non-zero from step one.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, controls: Tensor) -> Tensor:
        # Centre 0..1 knob positions on 0 so the tanh hidden layer starts in its linear range.
        hidden = torch.tanh(self.hidden(2.0 * controls - 1.0))
        raw = self.out(hidden).view(controls.size(0), self.layers, 2, self.features)
        scale = raw[:, :, 0] + 1.0
        shift = raw[:, :, 1]
        return torch.stack((scale, shift), dim=2)


class KnobGain(nn.Module):
    """knob positions (B, num_controls) -> output gain (B, 1, 1) = exp(small MLP), 1 at init.

    The amp's level follows the knobs over tens of dB (audio-taper volume, tone stack): in the log
    domain that is a range of a few units, easy for a tiny MLP, while scaling every layer's
    activations by that much is not. Folds into the output layer at one knob setting.
    """

    def __init__(self, num_controls: int, hidden: int = 8) -> None:
        super().__init__()
        self.hidden = nn.Linear(num_controls, hidden)
        self.out = nn.Linear(hidden, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, controls: Tensor) -> Tensor:
        return torch.exp(self.out(torch.tanh(self.hidden(2.0 * controls - 1.0)))).view(-1, 1, 1)
