"""WaveNet architecture config. Imports nothing but the standard library (house rule 1 keeps
ampmodel free of training dependencies; validation errors are plain ValueError subclasses)."""

from __future__ import annotations

from dataclasses import dataclass


class ModelConfigError(ValueError):
    """An impossible architecture (the CLI reports it like any config error)."""


ACTIVATIONS = ("gated", "tanh", "softsign_gated", "leaky_relu")
GATED_ACTIVATIONS = ("gated", "softsign_gated")
# none; film: per-layer scale/shift of the dilated conv's output (before the gate); film_out: that,
# and a second scale/shift of each layer's gated output (what its residual and skip see); concat:
# the knobs as constant extra input channels. All fold into an unconditioned net at one setting.
CONDITIONINGS = ("none", "film", "film_out", "concat")
FILM_CONDITIONINGS = ("film", "film_out")
# paper: Damskägg et al. 2019 (every layer's skip mixed by its own weights); nam: Neural Amp
# Modeler's WaveNet (layer arrays, the input mixed into every layer, summed skips through a head
# 1x1 per array), which NAM's plugin plays. Exportable families can be written as .nam files.
FAMILIES = ("paper", "nam")
EXPORTABLE_FAMILIES = ("nam",)
# .nam file formats the exportable families write: the file's "version" by format. 0.7 is what
# neural-amp-modeler 0.13 writes (NeuralAmpModelerCore >= 0.4.1 reads it), 0.5 what 0.12 wrote
# (every core reads it); the first is the default.
NAM_FILE_FORMATS = {"0.7": "0.7.0", "0.5": "0.5.4"}
NAM_ACTIVATIONS = ("tanh", "gated", "leaky_relu")  # NAM's Tanh, its gated Tanh * Sigmoid, A2's LeakyReLU
LEAKY_RELU_SLOPE = 0.01  # the negative slope of A2's LeakyReLU (torch's default, which NAM 0.13 exports)
# Fields only the nam family uses, with the value every other family must keep (NAM's A2 sets them).
NAM_ONLY_DEFAULTS = {"kernel_sizes": (), "head_kernel_size": 1, "head_scale": 0.02}
NAM_CONDITIONINGS = ("none", "film")  # those that fold into a net NAM's plugin runs (see _check_nam)

# Upper bounds checked before any tensor is allocated: a config.json from a model registry is
# untrusted input, and `channels = 100000` alone would ask for hundreds of GB. Generous for amp
# models (the paper's largest WaveNet has 16 channels, 18 layers, receptive field 2047); at the
# limits a net has ~0.2 G parameters (~1 GB), still allocatable.
MAX_SIZES = {"channels": 256, "kernel_size": 16, "head_kernel_size": 16, "head_hidden": 1024, "film_hidden": 1024,
             "num_controls": 16}
MAX_LAYERS = 64
MAX_DILATION = 65536
MAX_RECEPTIVE_FIELD = 262144  # ~5.5 s at 48 kHz
MAX_ARRAYS = 8


def parse_dilations(spec: str) -> tuple[int, ...]:
    """'1..512' -> powers of two 1..512; '(1..256)x2' -> that stack twice; '1,2,4,1,2,4' -> as written."""
    text = spec.replace(" ", "")
    repeat = 1
    if text.startswith("(") and ")x" in text:
        inner, _, count = text[1:].partition(")x")
        if not count.isdigit() or int(count) < 1:
            raise ModelConfigError(f"dilations '{spec}': repeat count after ')x' must be a positive integer")
        text, repeat = inner, int(count)
    if ".." in text:
        lo, _, hi = text.partition("..")
        if not (lo.isdigit() and hi.isdigit()) or int(lo) < 1 or int(hi) < int(lo):
            raise ModelConfigError(f"dilations '{spec}': expected 'A..B' with 1 <= A <= B, powers of two")
        a, b = int(lo), int(hi)
        if a & (a - 1) or b & (b - 1):
            raise ModelConfigError(f"dilations '{spec}': ends of a range must be powers of two")
        stack = tuple(2**k for k in range(a.bit_length() - 1, b.bit_length()))
    else:
        try:
            stack = tuple(int(d) for d in text.split(",") if d)
        except ValueError:
            raise ModelConfigError(f"dilations '{spec}': not a list of integers") from None
    if not stack or min(stack) < 1:
        raise ModelConfigError(f"dilations '{spec}': need at least one dilation, all >= 1")
    return stack * repeat


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class WaveNetConfig:
    """A WaveNet of either family; the defaults are Damskägg et al. 2019's WaveNet3 (family paper)."""

    channels: int = 16
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256) * 2
    kernel_size: int = 3
    activation: str = "gated"  # gated (tanh*sigmoid), tanh, softsign_gated; leaky_relu (nam only)
    head_hidden: int = 0  # 0 = linear 1x1 mixer of all skips; >0 = mixer -> MLP of this width -> 1
    conditioning: str = "none"  # none, film, film_out (both from a small MLP of the knobs), concat
    num_controls: int = 4  # volume, treble, bass, middle
    film_hidden: int = 16  # width of the control MLP that produces FiLM parameters
    # A learned output gain exp(g(knobs)) from a small MLP: the volume and tone knobs move the
    # amp's output level over tens of dB, which a multiplicative gain spans at no per-sample cost.
    knob_gain: bool = False
    family: str = "paper"  # paper or nam (see FAMILIES); nam exports to .nam files
    # nam only: `channels` is the first layer array's width, array_channels the widths of the
    # arrays after it; each array takes array_layers[i] of `dilations` in order (() = equal shares).
    array_channels: tuple[int, ...] = ()
    array_layers: tuple[int, ...] = ()
    # nam only, what NAM's A2 adds: each layer's own kernel size (() = kernel_size for every layer),
    # a causal conv of head_kernel_size taps as the last array's head (1 = A1's 1x1), and the fixed
    # scale of the output (A1 0.02, A2 0.01).
    kernel_sizes: tuple[int, ...] = ()
    head_kernel_size: int = 1
    head_scale: float = 0.02

    def __post_init__(self) -> None:
        self._check_types_and_limits()
        if self.channels < 1:
            raise ModelConfigError(f"channels: {self.channels} must be >= 1")
        if not self.dilations or min(self.dilations) < 1:
            raise ModelConfigError(f"dilations: {self.dilations} must be a non-empty list of integers >= 1")
        if self.kernel_size < 2:
            raise ModelConfigError(f"kernel_size: {self.kernel_size} must be >= 2 (1 would see no past)")
        if self.activation not in ACTIVATIONS:
            raise ModelConfigError(f"activation: '{self.activation}' is not one of {', '.join(ACTIVATIONS)}")
        if self.conditioning not in CONDITIONINGS:
            raise ModelConfigError(f"conditioning: '{self.conditioning}' is not one of {', '.join(CONDITIONINGS)}")
        if self.head_hidden < 0 or self.film_hidden < 1 or self.num_controls < 1:
            raise ModelConfigError("head_hidden must be >= 0, film_hidden and num_controls >= 1")
        if self.knob_gain and self.conditioning == "none":
            raise ModelConfigError("knob_gain: needs knob conditioning (film, film_out or concat); set it or drop knob_gain")
        if self.family not in FAMILIES:
            raise ModelConfigError(f"family: '{self.family}' is not one of {', '.join(FAMILIES)}")
        if self.family == "nam":
            self._check_nam()
        elif self.array_channels or self.array_layers:
            name = "array_channels" if self.array_channels else "array_layers"
            raise ModelConfigError(f"{name}: layer arrays belong to family 'nam'; set family = \"nam\" or drop it")
        else:
            for name, default in NAM_ONLY_DEFAULTS.items():
                if getattr(self, name) != default:
                    raise ModelConfigError(f"{name}: belongs to family 'nam' (NAM's A2); set family = \"nam\" or drop it")
            if self.activation == "leaky_relu":
                raise ModelConfigError("activation: 'leaky_relu' is available in family 'nam' only (NAM's A2); "
                                       f"use one of {', '.join(a for a in ACTIVATIONS if a != 'leaky_relu')}")

    def _check_nam(self) -> None:
        """What NAM's layer arrays can express, and what folds into a net its plugin runs."""
        if self.activation not in NAM_ACTIVATIONS:
            raise ModelConfigError(f"activation: '{self.activation}' is not available in family 'nam'; "
                                   f"use one of {', '.join(NAM_ACTIVATIONS)}")
        if self.conditioning not in NAM_CONDITIONINGS:
            why = ("its knob channels would need a bias in NAM's bias-free input layer" if self.conditioning == "concat"
                   else "its per-layer scale of the skips cannot fold into NAM's summed head")
            raise ModelConfigError(f"conditioning: '{self.conditioning}' is not available in family 'nam' ({why}); "
                                   f"use one of {', '.join(NAM_CONDITIONINGS)}")
        if self.head_hidden:
            raise ModelConfigError("head_hidden: family 'nam' has no head MLP (NAM's plugin runs none); set 0")
        if self.kernel_sizes and len(self.kernel_sizes) != len(self.dilations):
            raise ModelConfigError(f"kernel_sizes: {len(self.kernel_sizes)} kernel sizes for {len(self.dilations)} "
                                   "dilations; give one per layer, or none to use kernel_size everywhere")
        if self.kernel_sizes and min(self.kernel_sizes) < 2:
            raise ModelConfigError(f"kernel_sizes: {list(self.kernel_sizes)} must all be >= 2 (1 would see no past)")
        if self.head_kernel_size < 1:
            raise ModelConfigError(f"head_kernel_size: {self.head_kernel_size} must be >= 1")
        if not 0 < self.head_scale <= 1:
            raise ModelConfigError(f"head_scale: {self.head_scale} must be in (0, 1] (NAM: A1 0.02, A2 0.01)")
        if self.array_channels and min(self.array_channels) < 1:
            raise ModelConfigError(f"array_channels: {self.array_channels} must all be >= 1")
        arrays, layers = 1 + len(self.array_channels), len(self.dilations)
        if not self.array_layers and layers % arrays:
            raise ModelConfigError(f"array_layers: {layers} dilations do not split equally into {arrays} layer arrays; "
                                   "give array_layers (layers per array) or a multiple of the array count")
        if self.array_layers and (len(self.array_layers) != arrays or min(self.array_layers) < 1
                                  or sum(self.array_layers) != layers):
            raise ModelConfigError(f"array_layers: {list(self.array_layers)} must give each of the {arrays} layer "
                                   f"arrays >= 1 layer and add up to the {layers} dilations")

    def _check_types_and_limits(self) -> None:
        """Integers within MAX_SIZES / MAX_LAYERS / MAX_DILATION / MAX_RECEPTIVE_FIELD, else ModelConfigError."""
        for name, limit in MAX_SIZES.items():
            value = getattr(self, name)
            if not _is_int(value):
                raise ModelConfigError(f"{name}: expected an integer, got {value!r}")
            if value > limit:
                raise ModelConfigError(f"{name}: {value} is above the limit {limit} (ampmodel.config.MAX_SIZES)")
        if not isinstance(self.dilations, tuple) or not all(_is_int(d) for d in self.dilations):
            raise ModelConfigError(f"dilations: expected a list of integers, got {self.dilations!r}")
        if len(self.dilations) > MAX_LAYERS:
            raise ModelConfigError(f"dilations: {len(self.dilations)} layers is above the limit {MAX_LAYERS}")
        if self.dilations and max(self.dilations) > MAX_DILATION:
            raise ModelConfigError(f"dilations: {max(self.dilations)} is above the limit {MAX_DILATION}")
        if isinstance(self.head_scale, bool) or not isinstance(self.head_scale, (int, float)) \
                or self.head_scale != self.head_scale:
            raise ModelConfigError(f"head_scale: expected a number, got {self.head_scale!r}")
        for name in ("array_channels", "array_layers", "kernel_sizes"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(_is_int(v) for v in value):
                raise ModelConfigError(f"{name}: expected a list of integers, got {value!r}")
            if name != "kernel_sizes" and len(value) > MAX_ARRAYS:
                raise ModelConfigError(f"{name}: {len(value)} entries is above the limit of {MAX_ARRAYS} layer arrays")
        if self.array_channels and max(self.array_channels) > MAX_SIZES["channels"]:
            raise ModelConfigError(f"array_channels: {max(self.array_channels)} is above the limit "
                                   f"{MAX_SIZES['channels']} (ampmodel.config.MAX_SIZES)")
        if self.kernel_sizes and max(self.kernel_sizes) > MAX_SIZES["kernel_size"]:
            raise ModelConfigError(f"kernel_sizes: {max(self.kernel_sizes)} is above the limit "
                                   f"{MAX_SIZES['kernel_size']} (ampmodel.config.MAX_SIZES)")
        if self.kernel_size >= 1 and self.dilations and self.receptive_field > MAX_RECEPTIVE_FIELD:
            raise ModelConfigError(f"dilations: receptive field {self.receptive_field} samples is above the limit "
                                   f"{MAX_RECEPTIVE_FIELD}; use fewer or smaller dilations or a smaller kernel_size")

    @property
    def receptive_field(self) -> int:
        """Samples of input that one output sample depends on (current sample included)."""
        layers = sum((k - 1) * d for k, d in zip(self.layer_kernel_sizes, self.dilations))
        return 1 + layers + self.head_kernel_size - 1

    @property
    def layer_kernel_sizes(self) -> tuple[int, ...]:
        """Each layer's kernel size: kernel_sizes where given, else kernel_size everywhere."""
        return self.kernel_sizes or (self.kernel_size,) * len(self.dilations)

    @property
    def layers(self) -> int:
        return len(self.dilations)

    @property
    def film_features(self) -> int:
        """Per layer, how many channels FiLM scales and shifts (0 without FiLM)."""
        if self.conditioning not in FILM_CONDITIONINGS:
            return 0
        return self.pre_activation_channels + (self.channels if self.conditioning == "film_out" else 0)

    @property
    def pre_activation_channels(self) -> int:
        """Channels out of each dilated conv: a gated activation multiplies two halves (tanh * sigmoid)."""
        return self.pre_activation(self.channels)

    def pre_activation(self, channels: int) -> int:
        return 2 * channels if self.activation in GATED_ACTIVATIONS else channels

    @property
    def layer_arrays(self) -> tuple[tuple[int, tuple[int, ...]], ...]:
        """(channels, dilations) of each layer array; the paper family is one array."""
        widths = (self.channels, *self.array_channels)
        counts = self.array_layers or (len(self.dilations) // len(widths),) * len(widths)
        starts = [sum(counts[:i]) for i in range(len(counts))]
        return tuple((w, self.dilations[s:s + n]) for w, s, n in zip(widths, starts, counts))


def _nam_preset(channels: int, second: int, dilations: str, second_dilations: str) -> WaveNetConfig:
    first, then = parse_dilations(dilations), parse_dilations(second_dilations)
    equal = len(first) == len(then)  # equal shares: a search of layers_per_stack/stacks keeps working
    return WaveNetConfig(family="nam", channels=channels, array_channels=(second,), dilations=first + then,
                         array_layers=() if equal else (len(first), len(then)), kernel_size=3, activation="tanh")


# NAM's A2 (neural-amp-modeler 0.13, nam/train/_resources/config_model_packed.json): one layer array of
# 23 non-gated LeakyReLU layers with their own kernel sizes, a 16-tap head; NAM trains its 3- and
# 8-channel submodels together and its plugin plays the one its container picks.
A2_DILATIONS = (1, 3, 7, 17, 41, 101, 239) * 2 + (1, 13) + (1, 3, 7, 17, 41, 101, 239)
A2_KERNEL_SIZES = (6,) * 14 + (15, 15) + (6,) * 7


def _a2_preset(channels: int) -> WaveNetConfig:
    return WaveNetConfig(family="nam", channels=channels, dilations=A2_DILATIONS, kernel_size=6,
                         kernel_sizes=A2_KERNEL_SIZES, activation="leaky_relu", head_kernel_size=16, head_scale=0.01)


PRESETS: dict[str, WaveNetConfig] = {
    # Damskägg, Juvela, Thuillier, Välimäki, ICASSP 2019, Table 1 (parameter counts from the paper).
    "WaveNet1": WaveNetConfig(channels=16, dilations=parse_dilations("1..512")),
    "WaveNet2": WaveNetConfig(channels=8, dilations=parse_dilations("(1..256)x2")),
    "WaveNet3": WaveNetConfig(channels=16, dilations=parse_dilations("(1..256)x2")),
    # Neural Amp Modeler's trainer architectures (neural-amp-modeler 0.12, nam.train.core.get_wavenet_config;
    # tests/test_nam_family.py checks them against the installed package). standard: 13,801 weights + head_scale.
    "nam-standard": _nam_preset(16, 8, "1..512", "1..512"),
    "nam-lite": _nam_preset(12, 6, "1..64", "128,256,512,1,2,4,8,16,32,64,128,256,512"),
    "nam-feather": _nam_preset(8, 4, "1..64", "128,256,512,1,2,4,8,16,32,64,128,256,512"),
    "nam-nano": _nam_preset(4, 2, "1..64", "128,256,512,1,2,4,8,16,32,64,128,256,512"),
    # A2's submodels (neural-amp-modeler 0.13's channels_8 and channels_3; tests/test_nam_family.py
    # checks them against the installed package): 12,145 and 1,870 weights + head_scale.
    "nam-a2": _a2_preset(8),
    "nam-a2-channels3": _a2_preset(3),
}
