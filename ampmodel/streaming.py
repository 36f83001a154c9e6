"""Block-by-block WaveNet inference with cached dilation state.

Each residual layer's dilated conv needs (kernel_size-1)*dilation past samples of that layer's
input; everything else (input conv, gate, residual, mixer) is pointwise in time, except a head
over time (NAM's A2), which needs its past head_history sums of the layers' shares. So the stream
state is, per layer, exactly those past inputs (and those past sums), and a block of N samples
costs the same as N samples of a one-pass forward: no receptive field is recomputed per block.

The state starts as "silence since forever": each layer's past input is the constant that layer
sees when the whole input history is zero (not a zero activation - biases make it non-zero). So
processing x block by block equals `net(F.pad(x, (rf-1, 0)), controls)` exactly.
"""

from typing import Any, Iterable, Iterator, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .wavenet import WaveNetBase


class StreamingWaveNet(nn.Module):
    """`process(block, controls) -> output block of the same shape`; `reset()` forgets the past.

    block: (N,) or (B,1,N); controls: (num_controls,) or (B,num_controls), ignored when the net is
    unconditioned. Knob changes between blocks take effect from the next block on, with the
    state carried over (like turning a knob while playing). TorchScript-able.
    """

    # per layer, the last (kernel_size-1)*dilation inputs, then the last net.head_history sums of the
    # layers' shares (what a head over time needs; none for most nets); [] = not started
    states: List[Tensor]

    def __init__(self, net: WaveNetBase, chunk_size: int = 16384) -> None:
        super().__init__()
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.net = net
        # Long blocks are run in chunks of at most this many samples: the same result, but smaller
        # per-layer temporaries, which is faster for long blocks on CPU; much smaller chunks lose
        # again to per-op overhead.
        self.chunk_size = chunk_size
        self.states = []

    @torch.jit.export
    def reset(self) -> None:
        self.states = []

    def forward(self, block: Tensor, controls: Optional[Tensor] = None) -> Tensor:
        return self.process(block, controls)

    @torch.jit.export
    def process(self, block: Tensor, controls: Optional[Tensor] = None) -> Tensor:
        if block.dim() == 1:
            x = block.view(1, 1, -1)
        elif block.dim() == 3 and block.size(1) == 1:
            x = block
        else:
            raise ValueError("stream blocks must have shape (samples,) or (batch, 1, samples), got " + str(block.shape))
        if controls is not None and controls.dim() == 1:
            controls = controls.unsqueeze(0)
        batch = x.size(0)
        ctl = self.net.prepare_controls(controls, batch)
        film = self.net.film_params(ctl)
        if len(self.states) == 0:
            self.states = self._silence_states(ctl, film, x)
        elif self.states[0].size(0) != batch:
            raise ValueError(
                "stream was started with batch " + str(self.states[0].size(0)) + " but this block has batch "
                + str(batch) + "; call reset() before changing the batch size"
            )

        if x.size(2) == 0:
            return block.clone()
        chunks: List[Tensor] = []
        for start in range(0, x.size(2), self.chunk_size):
            chunks.append(self._process_chunk(x[:, :, start : start + self.chunk_size], ctl, film))
        y = chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=2)
        return y.view(block.shape)

    def _process_chunk(self, x: Tensor, ctl: Optional[Tensor], film: Optional[Tensor]) -> Tensor:
        batch = x.size(0)
        h = self.net.embed_input(x, ctl)
        mixed = torch.zeros(batch, self.net.mix_channels, x.size(2), dtype=h.dtype, device=h.device)
        mix = self.net.mix_weights()
        new_states: List[Tensor] = []
        for i, layer in enumerate(self.net.layers):
            layer_input = torch.cat([self.states[i], h], dim=2)
            # Detached: the stream is for inference; keeping the graph would grow it every block.
            new_states.append(layer_input[:, :, layer_input.size(2) - layer.history :].detach())
            h, share = layer(layer_input, mix[i], self.net.layer_film(film, i), x)
            mixed = mixed + share
        mixed = torch.cat([self.states[len(self.net.layers)], mixed], dim=2)
        new_states.append(mixed[:, :, mixed.size(2) - self.net.head_history :].detach())
        self.states = new_states
        return self.net.output(mixed, ctl)

    def _silence_states(self, controls: Optional[Tensor], film: Optional[Tensor], like: Tensor) -> List[Tensor]:
        """Per-layer past inputs for an all-zero input history: each layer sees a constant."""
        silence = torch.zeros(like.size(0), 1, 1, dtype=like.dtype, device=like.device)
        h = self.net.embed_input(silence, controls)  # (B, C, 1), constant in time
        mix = self.net.mix_weights()
        states: List[Tensor] = []
        mixed = torch.zeros(like.size(0), self.net.mix_channels, 1, dtype=like.dtype, device=like.device)
        for i, layer in enumerate(self.net.layers):
            states.append(h.expand(-1, -1, layer.history).contiguous().detach())
            h, share = layer(h.expand(-1, -1, layer.history + 1), mix[i], self.net.layer_film(film, i), silence)
            mixed = mixed + share
        states.append(mixed.expand(-1, -1, self.net.head_history).contiguous().detach())
        return states


class KnobStream:
    """Streaming for a player turning knobs: each knob move is folded into the weights
    (`at_setting`, O(parameters) once), so every block costs what an unconditioned net of
    the same size costs. The per-layer state carries over a knob move, exactly as in
    StreamingWaveNet with per-block controls (the tests check they agree). One knob setting at a
    time (batch rows share it); for a batch of different settings use StreamingWaveNet."""

    def __init__(self, net: WaveNetBase, chunk_size: int = 16384) -> None:
        self.net = net
        self.chunk_size = chunk_size
        self.knobs: Optional[tuple] = None
        self.stream: Optional[StreamingWaveNet] = None

    def reset(self) -> None:
        self.stream, self.knobs = None, None

    def process(self, block: Tensor, controls: Union[None, Sequence[float], Tensor] = None) -> Tensor:
        knobs = None
        if self.net.conditioned:
            ctl = None if controls is None else torch.as_tensor(controls, dtype=torch.float32)
            if ctl is not None and ctl.dim() == 2 and ctl.size(0) > 1 and not bool((ctl == ctl[:1]).all()):
                raise ValueError("KnobStream plays one knob setting at a time; use StreamingWaveNet for a "
                                 "batch of different settings")
            ctl = self.net.prepare_controls(None if ctl is None else ctl.reshape(-1)[: self.net.num_controls]
                                            .view(1, -1), 1)
            knobs = tuple(float(v) for v in ctl.view(-1).tolist())
        if self.stream is None or knobs != self.knobs:
            folded = self.net if knobs is None else self.net.at_setting(list(knobs))
            states = [] if self.stream is None else self.stream.states
            self.stream = StreamingWaveNet(folded, self.chunk_size)
            self.stream.states = states
            self.knobs = knobs
        return self.stream.process(block)


def render_blocks(
    net: Union[WaveNetBase, StreamingWaveNet],
    blocks: Iterable[Any],
    controls: Union[None, Sequence[float], Tensor, Any] = None,
) -> Iterator[Any]:
    """Run consecutive (samples,) blocks of one signal through `net` from silence, yielding each
    output block as it is computed (same length and type: numpy in -> float32 numpy out). Memory is
    one block plus the stream state, whatever the length of the signal (`ampstudy render` streams
    files of any length through it). A WaveNet is folded at its knob setting first (KnobStream).

    controls: the knob positions (volume, treble, bass, middle) in 0..1, e.g. [0.5, 0.5, 0.5, 0.5];
    None for an unconditioned net.
    """
    stream = net if isinstance(net, StreamingWaveNet) else KnobStream(net)
    stream.reset()
    param = next((stream.net if isinstance(stream, KnobStream) else stream).parameters())
    ctl = None if controls is None else torch.as_tensor(controls, dtype=param.dtype, device=param.device)
    try:
        for block in blocks:
            as_numpy = not isinstance(block, Tensor)
            x = torch.as_tensor(block, dtype=torch.float32) if as_numpy else block  # numpy without importing it
            if x.dim() != 1:
                raise ValueError(f"render expects a mono signal of shape (samples,), got {tuple(x.shape)}")
            # Per block, not around the loop: the caller's code between blocks must not run in inference mode.
            with torch.inference_mode():
                y = stream.process(x.to(device=param.device, dtype=param.dtype), ctl)
            yield y.cpu().numpy() if as_numpy else y
    finally:
        stream.reset()


def render(
    net: Union[WaveNetBase, StreamingWaveNet],
    audio: Any,
    controls: Union[None, Sequence[float], Tensor, Any] = None,
    block_size: int = 4096,
) -> Any:
    """Run a whole (samples,) signal through `net` in blocks, from silence; same length and type out.

    controls: as for `render_blocks`. numpy in -> float32 numpy out; tensor in -> tensor out.
    This (with `render_blocks`, which it runs) is the project's one whole-signal inference path:
    rendering a wav, evaluating a model, logged examples and the registered model all run it. A WaveNet is folded at its knob setting
    first (KnobStream), so conditioning costs nothing per sample. Any family (paper, nam).
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    as_numpy = not isinstance(audio, Tensor)
    x = torch.as_tensor(audio, dtype=torch.float32) if as_numpy else audio
    if x.dim() != 1:
        raise ValueError(f"render expects a mono signal of shape (samples,), got {tuple(x.shape)}")
    out = list(render_blocks(net, (x[i : i + block_size] for i in range(0, x.numel(), block_size)), controls))
    y = torch.cat(out) if out else x.clone()
    return y.cpu().numpy() if as_numpy else y
