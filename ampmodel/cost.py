"""What a WaveNet costs to run: parameters, receptive field, MACs per sample, real-time factor.

MACs and elementwise ops are *counted* by running the model (FlopCounterMode for convolutions,
a dispatch-mode counter for pointwise ops), not derived from the config, so a change to the
model cannot silently desynchronise the numbers; tests cross-check them against a formula.
Counts are marginal per output sample: measured at two input lengths and differenced, which
removes per-call constants (FiLM MLP, control checks) and the receptive-field warm-up edge.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode  # private, but stable since torch 2.0
from torch.utils.flop_counter import FlopCounterMode

from .config import WaveNetConfig
from .wavenet import WaveNetBase
from .streaming import StreamingWaveNet


def count_parameters(net: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)


@dataclass(frozen=True)
class OpCounts:
    macs_per_sample: float  # multiply-accumulates in convolutions (conv FLOPs / 2; bias adds excluded)
    elementwise_per_sample: float  # elements produced by pointwise ops: gates, residual adds, FiLM


class _PointwiseCounter(TorchDispatchMode):
    """Counts output elements of every aten op tagged pointwise (tanh, sigmoid, mul, add, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if torch.Tag.pointwise in func.tags and isinstance(out, Tensor):
            self.elements += out.numel()
        return out


def deployed(net: WaveNetBase, controls: Optional[Tensor] = None) -> WaveNetBase:
    """The net as inference runs it: folded at `controls` (mid-position knobs by default; any
    valid setting costs the same), or itself when unconditioned."""
    if not net.conditioned:
        return net
    return net.at_setting(controls if controls is not None else [0.5] * net.num_controls)


def _counts_at(net: WaveNetBase, length: int, controls: Optional[Tensor]) -> tuple[int, int]:
    param = next(net.parameters())
    x = torch.zeros(1, 1, length, dtype=param.dtype, device=param.device)
    ctl = None if controls is None else controls.to(device=param.device, dtype=param.dtype)
    # Grad mode on: FlopCounterMode's module tracker hooks module inputs that require grad, and
    # fails on parameter views (mixer slices) made without autograd. The input is short.
    flops = FlopCounterMode(display=False)
    with flops:
        net(x, ctl)
    with torch.no_grad():
        pointwise = _PointwiseCounter()
        with pointwise:
            net(x, ctl)
    return flops.get_total_flops(), pointwise.elements


def op_counts_per_sample(net: WaveNetBase, controls: Optional[Tensor] = None) -> OpCounts:
    """Counted MACs and pointwise-op elements per output sample (batch 1, steady state), of the
    network as it runs: a conditioned one folded at one knob setting (mid-position by default)."""
    net = deployed(net, controls)
    short, extra = net.receptive_field + 256, 1024
    flops_a, elems_a = _counts_at(net, short, None)
    flops_b, elems_b = _counts_at(net, short + extra, None)
    return OpCounts(macs_per_sample=(flops_b - flops_a) / 2 / extra, elementwise_per_sample=(elems_b - elems_a) / extra)


def macs_per_sample(net: WaveNetBase, controls: Optional[Tensor] = None) -> float:
    return op_counts_per_sample(net, controls).macs_per_sample


def analytic_macs_per_sample(net_or_cfg: WaveNetBase | WaveNetConfig) -> int:
    """The formula the counted number must match: weights touched per output sample. Takes a
    config too, so a search can reject too-expensive architectures without building them."""
    cfg = net_or_cfg.cfg if isinstance(net_or_cfg, WaveNetBase) else net_or_cfg
    if cfg.family == "nam":
        return _nam_macs_per_sample(cfg)
    c, k, layers = cfg.channels, cfg.kernel_size, cfg.layers
    pre = cfg.pre_activation_channels
    input_ch = 1  # knob conditioning is folded away before inference (WaveNet.at_setting)
    mixer_out = cfg.head_hidden if cfg.head_hidden > 0 else 1
    head = cfg.head_hidden if cfg.head_hidden > 0 else 0
    return input_ch * c + layers * (k * c * pre + c * c) + layers * c * mixer_out + head


def _nam_macs_per_sample(cfg: WaveNetConfig) -> int:
    """Input rechannel 1 -> C_1; per layer of array a: dilated conv (its own kernel size), input mixer
    1 -> P, residual 1x1 and its C_a -> 1 share of the output (heads and knobs are folded into those
    shares); the rechannel C_(a-1) -> C_a into each later array. With a head over time (A2) the
    shares are C_last wide (none to compute in the last array) and the head conv runs on their sum."""
    arrays, kernels = cfg.layer_arrays, iter(cfg.layer_kernel_sizes)
    last, over_time = arrays[-1][0], cfg.head_kernel_size > 1
    macs = arrays[0][0] + (cfg.head_kernel_size * last if over_time else 0)
    for a, (c, dilations) in enumerate(arrays):
        p = cfg.pre_activation(c)
        share = (0 if a == len(arrays) - 1 else last * c) if over_time else c
        macs += (arrays[a - 1][0] * c if a else 0)
        macs += sum(next(kernels) * c * p + p + c * c + share for _ in dilations)
    return macs


def realtime_factor(
    net: WaveNetBase,
    seconds: float = 1.0,
    block_seconds: float = 1.0,
    fs: int = 44100,
    threads: int = 1,
    controls: Optional[Tensor] = None,
    repeats: int = 5,
) -> float:
    """Audio seconds processed per wall-clock second when streaming at batch 1 (>1 = faster than
    real time). Streams `seconds` of noise in `block_seconds` blocks with cached state, on the
    net's device, with `threads` intra-op threads (restored afterwards); one warm-up pass is
    excluded and the median of `repeats` timed passes is reported. Conditioned nets are folded at
    mid-position knobs unless `controls` (num_controls,) is given, as `render` folds them."""
    param = next(net.parameters())
    block = max(1, round(block_seconds * fs))
    total = max(block, round(seconds * fs))
    gen = torch.Generator().manual_seed(0)
    audio = (0.5 * torch.randn(total, generator=gen)).to(device=param.device, dtype=param.dtype)
    stream = StreamingWaveNet(deployed(net, controls))
    sync = torch.cuda.synchronize if param.device.type == "cuda" else (lambda: None)

    def one_pass() -> float:
        stream.reset()
        sync()
        start = time.perf_counter()
        for i in range(0, total, block):
            stream.process(audio[i : i + block])
        sync()
        return time.perf_counter() - start

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            one_pass()  # warm-up: allocator, oneDNN kernel selection
            wall = statistics.median(one_pass() for _ in range(max(1, repeats)))
    finally:
        torch.set_num_threads(old_threads)
    return total / fs / wall


def compute_cost(net: WaveNetBase, fs: int = 44100, controls: Optional[Tensor] = None, threads: int = 1) -> dict:
    """Flat dict of numbers (ready for metric logging) describing the model's cost at rate fs.
    The real-time factor is that of a float32 CPU copy with `threads` threads (a plugin's
    setting), wherever the model was trained."""
    param = next(net.parameters())
    if param.device.type != "cpu" or param.dtype != torch.float32:
        net = copy.deepcopy(net).to(device="cpu", dtype=torch.float32)
    if controls is not None:
        controls = controls.detach().to(device="cpu", dtype=torch.float32)
    counts = op_counts_per_sample(net, controls)
    rf = net.receptive_field
    return {
        "params": count_parameters(net),
        "receptive_field_samples": rf,
        "receptive_field_ms": 1000.0 * rf / fs,
        "macs_per_sample": counts.macs_per_sample,
        "elementwise_per_sample": counts.elementwise_per_sample,
        "gmacs_per_audio_second": counts.macs_per_sample * fs / 1e9,
        "rtf": realtime_factor(net, fs=fs, threads=threads, controls=controls),
    }
