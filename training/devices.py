"""Where a run trains: the accelerator, its precision and the batch shape, resolved from TrainConfig.

`train.accelerator = "auto"` trains on CUDA when torch sees a GPU, else on the CPU; "cpu" and
"cuda" insist. `train.batch_size` / `train.segment_samples = "auto"` take the device's profile
below: a GPU is weak at the small convolutions of an amp WaveNet (8-24 channels), so per step it
needs many more samples than a CPU to keep busy, while a CPU gains nothing from larger steps.
The CPU profile is what the project always trained with (16 x 8192). The CUDA profile quadruples
the samples per step: a GPU's training samples/s keep rising with the batch well past 16 with
diminishing returns, and 64 takes most of the gain while keeping steps small enough for the
learning rates the studies search; a number in the config always wins over the profile.
`benchmarks/model_speed.py --devices cuda --batch-sweep` measures samples/s by batch size; its
`--bf16` by-device table times bf16 autocast at batch 16 (slower than float32 when last run).

Precision ("32", "bf16-mixed", "16-mixed") applies to training only: validation and test ESR are
computed with autocast and TF32 off (training/evaluate.py), so they are float32 numbers whatever
the training precision.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from foundation.errors import ConfigError
from training.run_config import ACCELERATORS, AUTO, TrainConfig

# accelerator -> (batch_size, segment_samples) used where the config says "auto"
DEVICE_PROFILES = {"cpu": (16, 8192), "cuda": (64, 8192)}
CPU_PRECISIONS = ("32", "bf16-mixed")  # torch autocasts to float16 on CUDA only


def cuda_available() -> bool:
    return torch.cuda.is_available()


def resolve_accelerator(name: str, has_cuda: bool | None = None, where: str = "train.accelerator") -> str:
    """"cpu" or "cuda" for `name` ("auto", "cpu", "cuda"); "cuda" without a GPU is a ConfigError naming the fix."""
    if name not in ACCELERATORS:
        raise ConfigError(f"{where}: '{name}' is not one of {', '.join(ACCELERATORS)}")
    has_cuda = cuda_available() if has_cuda is None else has_cuda
    if name == AUTO:
        return "cuda" if has_cuda else "cpu"
    if name == "cuda" and not has_cuda:
        raise ConfigError(f"{where}: 'cuda' but torch sees no CUDA GPU here (torch {torch.__version__}; "
                          "CUDA_VISIBLE_DEVICES and the driver decide); use \"auto\" or \"cpu\"")
    return name


@dataclass(frozen=True)
class Placement:
    """What a run trains on, every "auto" resolved."""

    accelerator: str  # "cpu" | "cuda"
    precision: str
    batch_size: int
    segment_samples: int

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self.accelerator == "cuda" else torch.device("cpu")

    def describe(self) -> str:
        """e.g. 'cuda (NVIDIA H100 80GB HBM3), bf16-mixed' or 'cpu (2 threads), 32'."""
        what = torch.cuda.get_device_name(self.device) if self.accelerator == "cuda" else f"{torch.get_num_threads()} threads"
        return f"{self.accelerator} ({what}), {self.precision}"


def placement(train: TrainConfig, has_cuda: bool | None = None) -> Placement:
    accelerator = resolve_accelerator(train.accelerator, has_cuda)
    if accelerator == "cpu" and train.precision not in CPU_PRECISIONS:
        raise ConfigError(f"train.precision: '{train.precision}' needs a CUDA GPU and this run trains on the CPU "
                          f"(train.accelerator = \"{train.accelerator}\"); use one of {', '.join(CPU_PRECISIONS)}")
    batch, segment = DEVICE_PROFILES[accelerator]
    return Placement(accelerator=accelerator, precision=train.precision,
                     batch_size=batch if train.batch_size == AUTO else int(train.batch_size),
                     segment_samples=segment if train.segment_samples == AUTO else int(train.segment_samples))


def resolved(train: TrainConfig, where: Placement) -> TrainConfig:
    """`train` with the batch shape it actually trains with (accelerator and precision kept as asked)."""
    return dataclasses.replace(train, batch_size=where.batch_size, segment_samples=where.segment_samples)
