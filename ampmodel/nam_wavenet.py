"""Neural Amp Modeler's WaveNet (family "nam"): the network NAM's plugin plays, trained our way.

Structure (NAM's A1 WaveNet: neural-amp-modeler 0.12's trainer architectures; .nam formats 0.5
and 0.7): layer arrays, one after the other.
Array a has `channels` C_a; a bias-free 1x1 "rechannel" takes its input (the audio for the first
array, the previous array's residual output after that) to C_a channels; each of its layers is a
dilated conv C_a -> P plus a bias-free 1x1 "input mixer" of the network's input audio 1 -> P,
then tanh (P = C_a) or a gate tanh*sigmoid (P = 2 C_a), then a 1x1 C_a -> C_a added to the
layer's input (the residual). The gated outputs (skips) of an array are summed with the head
signal coming from the previous array and go through the array's head 1x1 (C_a -> C_{a+1}, or
-> 1 with bias for the last array); the output is head_scale times the last head's output.

So the output is a sum over layers of linear maps of their skips: layer l of array a contributes
head_scale * H_last ... H_a @ skip_l. `mix_weights` gives exactly those products, and the layer
loop of wavenet.WaveNetBase (streaming, cost, folding) runs this family unchanged. The
rechannel into array a >= 2 sits in the array's first layer, so its state is that layer's input.

NAM's A2 (neural-amp-modeler 0.13's default; presets nam-a2, nam-a2-channels3) is this structure
with one array, a LeakyReLU (P = C), each layer's own kernel size, head_scale 0.01 and a last head
that is a causal conv of 16 taps (C -> 1, bias), not a 1x1. A head over time cannot fold into the
per-layer shares: with head_kernel_size > 1 the shares stay C_last channels wide (a layer of the
last array passes its skip on unchanged, an earlier one its H_last-1 ... H_a product) and `finish`
runs the head conv over their sum, which needs head_kernel_size - 1 past sums (`head_history`;
the streaming engine keeps them).

Knob conditioning: FiLM of each layer's pre-activation (conv + input mixer), which folds into
the conv and the input mixer at one knob setting: the folded net is a plain NAM WaveNet, and
`nam_config()` / `nam_weights()` give its .nam "config" and "weights" (training/nam_export.py
writes the file). State-dict keys: input_conv, layers.<i>.{rechannel,dilated,mixin,residual},
heads.<a>, film.{hidden,out}.
"""

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .conditioning import FiLM
from .config import LEAKY_RELU_SLOPE, NAM_FILE_FORMATS, WaveNetConfig
from .wavenet import WaveNetBase, activate, fold_film_into_conv, modulate, residual_and_share
# 0.7's FiLM switches of a layer array: all off in an A1 net (our knobs are folded into the weights).
NAM_FILM_KEYS = ("conv_pre_film", "conv_post_film", "input_mixin_pre_film", "input_mixin_post_film",
                 "activation_pre_film", "activation_post_film", "layer1x1_post_film", "head1x1_post_film")


class NamLayer(nn.Module):
    """One layer of a layer array; `rechannel_from` > 0 makes it the first layer of a later array,
    taking the previous array's `rechannel_from` channels to its own."""

    def __init__(self, cfg: WaveNetConfig, channels: int, kernel_size: int, dilation: int,
                 rechannel_from: int = 0) -> None:
        super().__init__()
        p = cfg.pre_activation(channels)
        self.gated = cfg.activation == "gated"
        self.leaky = cfg.activation == "leaky_relu"
        self.negative_slope: float = LEAKY_RELU_SLOPE
        self.history = (kernel_size - 1) * dilation
        self.rechannel: Optional[nn.Conv1d] = (nn.Conv1d(rechannel_from, channels, 1, bias=False) if rechannel_from
                                               else None)
        self.dilated = nn.Conv1d(channels, p, kernel_size, dilation=dilation)
        self.mixin = nn.Conv1d(1, p, 1, bias=False)
        self.residual = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor, mix_weight: Tensor, film: Optional[Tensor], audio: Tensor) -> Tuple[Tensor, Tensor]:
        rechannel = self.rechannel
        if rechannel is not None:
            x = rechannel(x)
        z = self.dilated(x)
        z = z + self.mixin(audio[:, :, audio.size(2) - z.size(2):])  # the input samples of these outputs
        if film is not None:
            z = modulate(z, film)
        skip = torch.nn.functional.leaky_relu(z, self.negative_slope) if self.leaky else activate(z, self.gated, False)
        return residual_and_share(x, skip, self.residual.weight, self.residual.bias, mix_weight, self.history)


class NamWaveNet(WaveNetBase):
    """The nam family; see the module docstring."""

    layer_array: List[int]  # per layer, its array's index
    film_offsets: List[int]  # per layer, where its FiLM features start in the FiLM output row
    film_sizes: List[int]

    def __init__(self, cfg: WaveNetConfig) -> None:
        super().__init__(cfg, "nam")
        arrays = cfg.layer_arrays
        self.input_conv = nn.Conv1d(1, arrays[0][0], 1, bias=False)  # the first array's rechannel
        layers: List[NamLayer] = []
        self.layer_array = []
        kernels = iter(cfg.layer_kernel_sizes)
        for a, (width, dilations) in enumerate(arrays):
            for j, dilation in enumerate(dilations):
                layers.append(NamLayer(cfg, width, next(kernels), dilation, arrays[a - 1][0] if a and not j else 0))
                self.layer_array.append(a)
        self.layers = nn.ModuleList(layers)
        self.num_arrays: int = len(arrays)
        last = len(arrays) - 1
        self.heads = nn.ModuleList([nn.Conv1d(width, 1 if a == last else arrays[a + 1][0],
                                              cfg.head_kernel_size if a == last else 1, bias=a == last)
                                    for a, (width, _) in enumerate(arrays)])
        self.head_scale: float = float(cfg.head_scale)
        # A head over time (A2) sums C_last-wide shares and convolves them in finish; a 1x1 head folds.
        self.head_history = cfg.head_kernel_size - 1
        self.mix_channels = arrays[last][0] if self.head_history else 1
        sizes = [cfg.pre_activation(arrays[a][0]) for a in self.layer_array]
        self.film_offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        self.film_sizes = sizes
        # One FiLM output row for all layers (their widths differ between arrays): layer_film slices it.
        self.film = FiLM(cfg.num_controls, cfg.film_hidden, 1, sum(sizes)) if cfg.conditioning == "film" else None

    # --- the layer loop's hooks (wavenet.WaveNetBase) ---

    @torch.jit.export
    def embed_input(self, x: Tensor, controls: Optional[Tensor]) -> Tensor:
        return self.input_conv(x)

    @torch.jit.export
    def mix_weights(self) -> List[Tensor]:
        """Per layer, head_scale * H_last ... H_a (1, C_a): its skip's map to the output. With a head
        over time, H_last-1 ... H_a (C_last, C_a), and for the last array's layers an empty (0, C_last)
        weight: the skip itself is the share (residual_and_share), the head conv runs in finish."""
        heads: List[Tensor] = []
        for head in self.heads:
            heads.append(head.weight[:, :, 0])
        ref = heads[0]
        if self.head_history:
            width = self.mix_channels
            chain = torch.eye(width, dtype=ref.dtype, device=ref.device)
            chains: List[Tensor] = [torch.zeros(0, width, dtype=ref.dtype, device=ref.device)]
            start = len(heads) - 2
        else:
            chain = torch.full((1, 1), self.head_scale, dtype=ref.dtype, device=ref.device)
            chains = []
            start = len(heads) - 1
        for a in range(start, -1, -1):
            chain = chain @ heads[a]
            chains.insert(0, chain)
        return [chains[a] for a in self.layer_array]

    @torch.jit.export
    def layer_film(self, film: Optional[Tensor], i: int) -> Optional[Tensor]:
        if film is None:
            return None
        start = self.film_offsets[i]
        return film[:, 0, :, start : start + self.film_sizes[i]]

    @torch.jit.export
    def finish(self, mixed: Tensor) -> Tensor:
        """Summed shares (B,1,T) -> output: plus head_scale times the last head's bias. With a head
        over time, (B,C_last,T+head_history) -> head_scale times the head conv's (B,1,T)."""
        for a, head in enumerate(self.heads):
            bias = head.bias
            if a == self.num_arrays - 1 and bias is not None:
                if self.head_history:
                    return self.head_scale * head(mixed)
                mixed = mixed + self.head_scale * bias.view(1, -1, 1)
        return mixed

    def fold_output_gain(self, state: dict, gain: float) -> None:
        # Every layer reaches the output through the last array's head (and head_scale): scale it.
        last = f"heads.{self.num_arrays - 1}"
        state[f"{last}.weight"] = state[f"{last}.weight"] * gain
        if f"{last}.bias" in state:
            state[f"{last}.bias"] = state[f"{last}.bias"] * gain

    def fold_knobs(self, state: dict, controls: Tensor) -> None:
        """FiLM scales and shifts conv + input mixer: the scale folds into both, the shift into the conv bias."""
        for i, (scale, shift) in enumerate(self.layer_films(controls)):
            fold_film_into_conv(state, f"layers.{i}.dilated", scale, shift)
            state[f"layers.{i}.mixin.weight"] = state[f"layers.{i}.mixin.weight"] * scale.view(-1, 1, 1)

    # --- the .nam file's "config" and "weights" (NAM's layout; the net must be unconditioned) ---

    def nam_config(self, file_format: str = "0.7") -> Dict[str, Any]:
        """The .nam "config" in `file_format` (NAM_FILE_FORMATS): "0.7", as neural-amp-modeler 0.13
        writes a WaveNet (a head object per array, per-layer lists, every option it adds off; an A2
        submodel is one such WaveNet), or "0.5", as 0.12 writes an A1 net (it cannot hold A2's
        per-layer kernels, LeakyReLU or head over time). The weights are the same in both (`nam_weights`)."""
        if file_format not in NAM_FILE_FORMATS:
            raise ValueError(f"file_format: '{file_format}' is not one of {', '.join(NAM_FILE_FORMATS)}")
        cfg = self.cfg
        arrays, gated, leaky = cfg.layer_arrays, cfg.activation == "gated", cfg.activation == "leaky_relu"
        if file_format == "0.5" and (len(set(cfg.layer_kernel_sizes)) > 1 or leaky or cfg.head_kernel_size > 1):
            raise ValueError("file_format: '0.5' cannot hold NAM's A2 (per-layer kernel sizes, LeakyReLU, a head "
                             "over time); use '0.7'")
        activation = {"type": "LeakyReLU", "negative_slope": LEAKY_RELU_SLOPE} if leaky else {"type": "Tanh"}
        kernels = iter(cfg.layer_kernel_sizes)
        layers: List[Dict[str, Any]] = []
        for a, (width, dilations) in enumerate(arrays):
            last = a + 1 == len(arrays)
            common = {"input_size": arrays[a - 1][0] if a else 1, "condition_size": 1, "channels": width,
                      "dilations": list(dilations)}
            head_size = 1 if last else arrays[a + 1][0]
            if file_format == "0.5":
                layers.append({**common, "head_size": head_size, "kernel_size": cfg.kernel_size,
                               "activation": "Tanh", "gated": gated, "head_bias": last})
                continue
            n = len(dilations)
            off = {"active": False, "shift": True, "groups": 1}
            layers.append({
                **common,
                "head": {"out_channels": head_size, "kernel_size": cfg.head_kernel_size if last else 1, "bias": last},
                "kernel_sizes": [next(kernels) for _ in dilations], "activation": [dict(activation) for _ in dilations],
                "gating_mode": ["gated" if gated else "none"] * n,
                "secondary_activation": [{"type": "Sigmoid"} if gated else None] * n, "bottleneck": width,
                "head1x1": {"active": False, "out_channels": 1, "groups": 1},
                "layer1x1": {"active": True, "groups": 1}, "groups_input": 1, "groups_input_mixin": 1,
                **{key: dict(off) for key in NAM_FILM_KEYS}, "slimmable": None})
        return {"layers": layers, "head": None, "head_scale": self.head_scale}

    def nam_weights(self) -> List[float]:
        """All weights in NAM's order: per array its rechannel, per layer conv (weight, bias), input
        mixer, 1x1 (weight, bias), then the array's head (its taps too); head_scale last."""
        if self.conditioned:
            raise ValueError("a knob-conditioned net has no .nam weights; fold a setting first: net.at_setting(knobs)")
        tensors: List[Tensor] = []
        for i, layer in enumerate(self.layers):
            if i == 0 or layer.rechannel is not None:
                tensors.append((self.input_conv if i == 0 else layer.rechannel).weight)
            tensors += [layer.dilated.weight, layer.dilated.bias, layer.mixin.weight, layer.residual.weight,
                        layer.residual.bias]
            if i + 1 == len(self.layers) or self.layers[i + 1].rechannel is not None:
                head = self.heads[self.layer_array[i]]
                tensors += [head.weight] + ([head.bias] if head.bias is not None else [])
        flat = torch.cat([t.detach().reshape(-1).cpu().double() for t in tensors])
        return flat.tolist() + [self.head_scale]
