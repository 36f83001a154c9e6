"""The config of one training run (`ampstudy train`, and every Optuna trial): data + model + training.

A run config file is TOML with up to four tables, all optional, e.g.

    experiment = "bassman"
    [data.audio]             # data comes in groups: [data.knobs], [data.audio], [data.simulation]
    corpus_seconds = 30
    [model]
    preset = "WaveNet2"      # start from a preset (paper WaveNet1-3, NAM's nam-standard ...), then override fields
    dilations = "(1..256)x2" # or a list of integers
    [train]
    learning_rate = 0.004
    [train.loss]             # what training minimises
    reference = "dataset"
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ampmodel.config import PRESETS, ModelConfigError, WaveNetConfig, parse_dilations
from datamodules.config import DataConfig
from foundation.configs import from_mapping, require, to_dict
from foundation.errors import ConfigError

LOSSES = ("esr", "esr_dc", "esr_stft")
# nam-family lists a study may search (and --set may give) as "8" or "8,4"
ARRAY_FIELDS = ("array_channels", "array_layers", "kernel_sizes")
LOSS_REFERENCES = ("batch", "dataset", "setting")
ACCELERATORS = ("auto", "cpu", "cuda")  # "auto": cuda when torch sees a GPU, else cpu (training/devices.py)
# Lightning precisions whose weights stay float32 ("-true" ones would also make evaluation low precision).
PRECISIONS = ("32", "bf16-mixed", "16-mixed")
AUTO = "auto"


@dataclass(frozen=True)
class LossConfig:
    """What training minimises ([train.loss]); validation and test always report the ESR of
    training/evaluate.py, whatever the loss."""

    # The error: "esr" (the papers'), "esr_dc" (adds a DC-offset term), "esr_stft" (adds a multi-resolution
    # STFT term: spectral detail the waveform ESR underweights, at about twice the CPU per step).
    kind: str = "esr"
    # First-order pre-emphasis coefficient on both signals before the ESR (0 = off): higher weights highs
    # more, where a guitar amp's harshness lives; 0.95 is what the reported ESR uses.
    pre_emphasis: float = 0.95
    aux_weight: float = 1.0  # weight of the DC or STFT term against the ESR (ignored by "esr")
    # What the error is divided by (training/lightning_module.py): "batch" (the batch's ESR; can explode on
    # near-silent batches), "dataset" (the mean training power: well-conditioned) or "setting" (each knob
    # setting's own training power: quiet settings count as much as loud ones).
    reference: str = "batch"
    setting_power_floor: float = 0.01  # "setting": no reference below this share of the mean power (0.01 = -20 dB)

    SCALAR_KEY: ClassVar[str] = "kind"  # `loss = "esr"` of the flat [train] table before the groups (2026-12)

    def __post_init__(self) -> None:
        require(self.kind in LOSSES, "kind", f"'{self.kind}' is not one of {', '.join(LOSSES)}")
        require(math.isfinite(self.pre_emphasis) and 0 <= self.pre_emphasis < 1, "pre_emphasis", "must be in [0, 1)")
        require(math.isfinite(self.aux_weight) and self.aux_weight >= 0, "aux_weight", "must be >= 0")
        require(self.reference in LOSS_REFERENCES, "reference",
                f"'{self.reference}' is not one of {', '.join(LOSS_REFERENCES)}")
        require(math.isfinite(self.setting_power_floor) and 0 <= self.setting_power_floor <= 1,
                "setting_power_floor", "must be in 0..1")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Defaults follow Damskägg et al. / Wright et al. where they say."""

    learning_rate: float = 5e-3
    lr_decay: float = 0.5  # ReduceLROnPlateau factor on validation ESR
    lr_patience: int = 3  # validation checks without improvement before decaying the learning rate
    # "auto": chosen from the device the run trains on (training/devices.py DEVICE_PROFILES); a number
    # is used as given on every device (what a study spread over mixed machines needs to compare trials).
    batch_size: int | Literal["auto"] = AUTO
    segment_samples: int | Literal["auto"] = AUTO  # output samples per training example (input adds receptive_field - 1)
    max_epochs: int = 100
    # The compute budget: training samples (output samples the loss sees, steps x batch_size x
    # segment_samples) after which fitting stops; 0 = no limit. The same on any machine and under any
    # load, so runs with equal max_samples are compared at equal compute (studies: budget.trial_samples).
    max_samples: int = 0
    max_minutes: float = 0.0  # wall-clock limit of fitting (a safety timeout in studies); 0 = no limit
    early_stopping_patience: int = 8  # validation checks without improvement before stopping; 0 = never stop early
    limit_train_batches: int = 0  # batches per epoch; 0 = whole training split
    val_every_epochs: int = 1
    loss: LossConfig = field(default_factory=LossConfig)  # [train.loss]: what training minimises
    gradient_clip: float = 1.0
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    accelerator: str = AUTO  # "auto" (cuda when present, else cpu), "cpu" or "cuda"
    precision: str | int = "32"  # "32"; "bf16-mixed" (cpu, cuda) or "16-mixed" (cuda): training only, ESR is float32
    audio_seconds: float = 3.0  # length of the wav/plot examples logged at the end of a run

    # Keys of the flat [train] table before the groups (2026-12), and where each went (`loss = "esr"`
    # itself became loss.kind).
    MOVED_KEYS: ClassVar[dict[str, str]] = {"pre_emphasis": "loss.pre_emphasis", "aux_weight": "loss.aux_weight",
                                            "loss_reference": "loss.reference",
                                            "setting_power_floor": "loss.setting_power_floor"}

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float):
                require(math.isfinite(value), f.name, f"{value} is not a finite number")
        require(self.learning_rate > 0, "learning_rate", "must be > 0")
        require(0 < self.lr_decay <= 1, "lr_decay", "must be in (0, 1]")
        for name in ("batch_size", "segment_samples"):
            value = getattr(self, name)
            require(value == AUTO or (isinstance(value, int) and value >= 1), name, "must be >= 1 (or \"auto\")")
        require(self.max_epochs >= 1, "max_epochs", "must be >= 1")
        require(self.max_samples >= 0, "max_samples", "must be >= 0 (0 = no limit)")
        require(self.max_minutes >= 0, "max_minutes", "must be >= 0 (0 = no limit)")
        require(self.early_stopping_patience >= 0, "early_stopping_patience", "must be >= 0 (0 = no early stopping)")
        require(self.limit_train_batches >= 0, "limit_train_batches", "must be >= 0")
        require(self.val_every_epochs >= 1, "val_every_epochs", "must be >= 1")
        require(self.threads >= 0, "threads", "must be >= 0")
        require(self.audio_seconds >= 0, "audio_seconds", "must be >= 0")
        require(self.accelerator in ACCELERATORS, "accelerator",
                f"'{self.accelerator}' is not one of {', '.join(ACCELERATORS)}")
        if isinstance(self.precision, int):  # TOML `precision = 32` means "32"
            object.__setattr__(self, "precision", str(self.precision))
        require(self.precision in PRECISIONS, "precision",
                f"'{self.precision}' is not one of {', '.join(PRECISIONS)} (weights stay float32)")
        require(not (self.accelerator == "cpu" and self.precision == "16-mixed"), "precision",
                "'16-mixed' needs a CUDA GPU (torch has no float16 autocast on CPU); use \"bf16-mixed\" or \"32\"")


@dataclass(frozen=True)
class RunConfig:
    experiment: str = "ampstudy"  # MLflow experiment
    run_name: str = ""  # MLflow run name; empty = MLflow picks one
    data: DataConfig = field(default_factory=DataConfig)
    model: WaveNetConfig = field(default_factory=WaveNetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        require(bool(self.experiment.strip()), "experiment", "must not be empty")


# What a `preset` leaves of the config it replaces: the knob conditioning, not the architecture.
KNOB_FIELDS = ("conditioning", "num_controls", "film_hidden", "knob_gain")


def model_from_mapping(data: Mapping[str, Any] | None, where: str = "model",
                       base: WaveNetConfig | None = None) -> WaveNetConfig:
    """WaveNetConfig from a table of values over `base` (default WaveNetConfig()). The table may name
    a `preset`, whose architecture replaces base's (base's KNOB_FIELDS stay: a study searching presets
    keeps [base.model]'s conditioning), and give `dilations` as a string."""
    table = dict(data or {})
    base = base or WaveNetConfig()
    preset = table.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"{where}.preset: '{preset}' is not one of {', '.join(PRESETS)}")
        base = dataclasses.replace(PRESETS[preset], **{name: getattr(base, name) for name in KNOB_FIELDS})
    if isinstance(table.get("dilations"), str):
        try:
            table["dilations"] = parse_dilations(table["dilations"])
        except ModelConfigError as err:
            raise ConfigError(f"{where}.{err}") from None
    for name in ARRAY_FIELDS:  # one number, or "8,4" (how a study's choices name a list)
        value = table.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            table[name] = (value,)
        elif isinstance(value, str):
            try:
                table[name] = tuple(int(v) for v in value.split(",") if v.strip())
            except ValueError:
                raise ConfigError(f"{where}.{name}: '{value}' is not a list of integers such as "
                                  "\"8\" or \"8,4\"") from None
    if base.kernel_sizes and "kernel_sizes" not in table and ("kernel_size" in table or "dilations" in table):
        table["kernel_sizes"] = ()  # a preset's per-layer kernels (A2) fit its own layers: kernel_size everywhere
    merged = {**to_dict(base), **table}
    return from_mapping(WaveNetConfig, merged, where)


def regrouped(table: Mapping[str, Any]) -> dict[str, Any]:
    """A run-config table saved before the config groups (2026-12: flat [data] and [train] tables)
    with each moved key in its group; a grouped table comes back unchanged. For the run configs that
    saved models and runs carry; a config file with an old key gets a one-line error naming its new
    place instead (from_mapping reads MOVED_KEYS)."""
    out = dict(table)
    for section, cls in (("data", DataConfig), ("train", TrainConfig)):
        old = dict(out.get(section) or {})
        if section == "train" and isinstance(old.get("loss"), str):
            old["loss"] = {LossConfig.SCALAR_KEY: old["loss"]}
        for key, place in cls.MOVED_KEYS.items():
            if key in old:
                group, _, leaf = place.partition(".")
                old[group] = {**(old.get(group) or {}), leaf: old.pop(key)}
        if section in out:
            out[section] = old
    return out


def run_config_from_mapping(data: Mapping[str, Any]) -> RunConfig:
    table = dict(data)
    model = model_from_mapping(table.pop("model", None))
    cfg = from_mapping(RunConfig, table)
    return dataclasses.replace(cfg, model=model)
