"""Training/evaluation losses for amp modelling (own implementations, torch only).

- ESR (error-to-signal ratio) with first-order pre-emphasis, as in Damskägg et al. 2019 and
  Wright & Välimäki 2019: sum((t-p)^2) / sum(t^2) after filtering both by 1 - c z^-1, which
  weights the error towards high frequencies where distortion products are audible.
- DC term of Wright & Välimäki 2019: mean(t-p)^2 / mean(t^2).
- Multi-resolution STFT loss: spectral convergence + log-magnitude distance at several FFT sizes.

Reduction convention for ESR and DC: the whole tensor (batch and time) is treated as ONE signal,
i.e. energies are summed over all elements before the ratio is taken. This weights loud segments
more than a mean of per-segment ratios would, and `esr_parts` lets an evaluator accumulate the
exact whole-signal ESR across batches: ESR = sum(error energies) / sum(target energies).
Each segment is pre-emphasised on its own (its first sample passes unfiltered).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import Tensor, nn


def _check_same_shape(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")


def pre_emphasis(x: Tensor, coeff: float) -> Tensor:
    """y[n] = x[n] - coeff * x[n-1] along the last axis; same length, y[0] = x[0] (no padding)."""
    return _pre_emphasise(x, coeff)


def _pre_emphasise(x: Tensor, coeff: float) -> Tensor:
    # Separate name because the loss functions' `pre_emphasis` argument shadows the public one.
    if coeff == 0.0:
        return x
    return torch.cat([x[..., :1], x[..., 1:] - coeff * x[..., :-1]], dim=-1)


def esr_parts(pred: Tensor, target: Tensor, pre_emphasis: float = 0.95) -> Tuple[Tensor, Tensor]:
    """(error energy, target energy), each summed over every element, after pre-emphasis."""
    _check_same_shape(pred, target)
    t = _pre_emphasise(target, pre_emphasis)
    p = _pre_emphasise(pred, pre_emphasis)
    return (t - p).square().sum(), t.square().sum()


def esr(pred: Tensor, target: Tensor, pre_emphasis: float = 0.95, eps: float = 1e-8) -> Tensor:
    """Error-to-signal ratio (scalar) with pre-emphasis `pre_emphasis` (0 = none); see module doc."""
    error_energy, target_energy = esr_parts(pred, target, pre_emphasis)
    return error_energy / (target_energy + eps)


def dc_loss(pred: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """Wright & Välimäki 2019 DC term: mean(t - p)^2 / mean(t^2) over all elements."""
    _check_same_shape(pred, target)
    return (target - pred).mean().square() / (target.square().mean() + eps)


class MultiResolutionSTFTLoss(nn.Module):
    """Mean over resolutions of spectral convergence + mean |log|T| - log|P||.

    spectral convergence = ||(|T| - |P|)||_F / ||T||_F (per batch as one spectrogram);
    resolutions are (n_fft, hop) pairs with a Hann window of length n_fft. Inputs (..., T), the
    leading axes are flattened into a batch of independent signals.
    """

    def __init__(
        self,
        resolutions: Sequence[Tuple[int, int]] = ((512, 128), (1024, 256), (2048, 512)),
        eps: float = 1e-7,
    ) -> None:
        super().__init__()
        if not resolutions or any(n < 2 or h < 1 for n, h in resolutions):
            raise ValueError(f"resolutions must be non-empty (n_fft >= 2, hop >= 1) pairs, got {resolutions}")
        self.resolutions = [(int(n), int(h)) for n, h in resolutions]
        self.eps = eps
        for n_fft, _ in self.resolutions:
            # Not persistent: derived from the config, so checkpoints do not need to carry them.
            self.register_buffer(f"window_{n_fft}", torch.hann_window(n_fft), persistent=False)

    def _magnitude(self, x: Tensor, n_fft: int, hop: int) -> Tensor:
        window = getattr(self, f"window_{n_fft}")
        spec = torch.stft(x, n_fft, hop_length=hop, window=window.to(x.dtype), center=True, return_complex=True)
        # sqrt of a clamped power keeps the gradient finite at exact zeros.
        return spec.abs().square().clamp_min(self.eps).sqrt()

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_same_shape(pred, target)
        length = pred.size(-1)
        longest = max(n for n, _ in self.resolutions)
        if length <= longest // 2:
            raise ValueError(f"signals of {length} samples are too short for n_fft={longest}; need > {longest // 2}")
        p = pred.reshape(-1, length)
        t = target.reshape(-1, length)
        total = pred.new_zeros(())
        for n_fft, hop in self.resolutions:
            mag_p = self._magnitude(p, n_fft, hop)
            mag_t = self._magnitude(t, n_fft, hop)
            convergence = torch.linalg.norm(mag_t - mag_p) / torch.linalg.norm(mag_t)
            log_distance = (mag_t.log() - mag_p.log()).abs().mean()
            total = total + convergence + log_distance
        return total / len(self.resolutions)
