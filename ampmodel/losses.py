"""Losses and the error-to-signal ratio for amp modelling (own implementations, torch only).

- ESR (error-to-signal ratio) with first-order pre-emphasis, as in Damskägg et al. 2019 and
  Wright & Välimäki 2019: sum((t-p)^2) / sum(t^2) after filtering both, which weights the
  error towards high frequencies where distortion products are audible. This module holds the
  project's only ESR: the training loss, validation/test metrics, logged figures and benchmarks
  all call `esr_parts` / `esr`.
- DC term of Wright & Välimäki 2019: mean(t-p)^2 / mean(t^2).
- Multi-resolution STFT loss: spectral convergence + log-magnitude distance at several FFT sizes.

Pre-emphasis convention: a signal is filtered by 1 - c z^-1 along its last axis,
y[n] = x[n] - c * x[n-1]. Its first sample has no predecessor inside the signal and is dropped,
so the filtered signal is one sample shorter; c = 0 means no filtering and drops nothing.
Every signal (a training segment, a whole evaluation span) is filtered on its own.

Reduction: error and target energies are summed over every element (batch and time) before the
ratio is taken, i.e. a batch is treated as ONE signal; `per_item=True` keeps one sum per batch
item so an evaluator can pool items (per knob setting, say) and take the ratio at the end.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

# Every run reports ESR after this pre-emphasis, whatever its loss uses, so trials that search the
# loss's pre-emphasis stay comparable (0.95 as in Damskägg et al. 2019).
REPORTED_PRE_EMPHASIS = 0.95


def _check_same_shape(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")


def pre_emphasise(x: Tensor, coeff: float) -> Tensor:
    """x[..., 1:] - coeff * x[..., :-1] (see the module's convention); x itself when coeff is 0."""
    if coeff == 0.0:
        return x
    return x[..., 1:] - coeff * x[..., :-1]


def esr_parts(pred: Tensor, target: Tensor, pre_emphasis: float = REPORTED_PRE_EMPHASIS,
              weight: Optional[Tensor] = None, per_item: bool = False) -> Tuple[Tensor, Tensor]:
    """(error energy, target energy) after pre-emphasis, each summed over every element, or
    over all but the first axis with `per_item`. `weight` multiplies both energies elementwise
    (broadcast against the filtered signals, e.g. (B, 1, 1) per item)."""
    _check_same_shape(pred, target)
    t = pre_emphasise(target, pre_emphasis)
    error = (t - pre_emphasise(pred, pre_emphasis)).square()
    energy = t.square()
    if weight is not None:
        error, energy = error * weight, energy * weight
    if per_item:
        return error.flatten(1).sum(1), energy.flatten(1).sum(1)
    return error.sum(), energy.sum()


def esr(pred: Tensor, target: Tensor, pre_emphasis: float = REPORTED_PRE_EMPHASIS,
        weight: Optional[Tensor] = None, eps: float = 1e-8) -> Tensor:
    """Error-to-signal ratio (scalar) of the whole batch as one signal; see the module docstring."""
    error_energy, target_energy = esr_parts(pred, target, pre_emphasis, weight)
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
