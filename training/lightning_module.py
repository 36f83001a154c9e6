"""LightningModule around the pure WaveNet: ESR loss with pre-emphasis, whole-signal validation ESR.

It holds the network as `self.net` (so the nn.Module can be saved alone) and the frozen run
config, which is also written into every checkpoint under `ampstudy_config`. It is built with
everything it needs from the data: which group each knob setting belongs to (for seen/unseen
metrics) and, for the normalised losses, each training setting's reference power.

Loss normalisation (`train.loss.reference`), all with the ESR of ampmodel.losses:
- "batch": the batch's ESR, error energy / target energy of the batch as one signal (the papers'
  loss). A batch of quiet or near-silent segments divides by almost nothing, so its value and
  gradient can explode.
- "dataset": error energy / the energy the batch would have at the mean training power: the
  pooled ESR in expectation, with a constant denominator, so it stays well-conditioned.
- "setting": each item's error over its own setting's mean training power (but at least
  `setting_power_floor` x the mean over settings): quiet knob settings (low volume, bass and
  middle down) count about as much as loud ones, down to the floor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch

from ampmodel.losses import MultiResolutionSTFTLoss, dc_loss, esr, esr_parts
from ampmodel.metrics import ESRAccumulator
from ampmodel.loading import build_wavenet
from datamodules.bassman import BassmanDataModule
from foundation.configs import to_dict
from foundation.errors import TrainingDiverged
from training.evaluate import PRIMARY, predict_span, split_metrics
from training.run_config import RunConfig

MONITOR = f"val_{PRIMARY}"  # what the checkpoint, early stopping, LR schedule and pruning follow
FINITE_CHECK_STEPS = 50  # training steps between host-side checks that the loss is finite


def reference_power(datamodule: BassmanDataModule, pre_emphasis: float) -> list[float]:
    """Per setting, the mean power of its pre-emphasised training target (0 for settings not trained on)."""
    power = []
    for setting, group in enumerate(datamodule.groups):
        energy, samples = 0.0, 0
        for start, end in (datamodule.split_spans("train", setting) if group == "train" else []):
            target = torch.from_numpy(datamodule.data.targets[setting][start:end]).double().view(1, 1, -1)
            _, e = esr_parts(torch.zeros_like(target), target, pre_emphasis)
            energy, samples = energy + float(e), samples + target.size(-1) - (pre_emphasis != 0.0)
        power.append(energy / samples if samples else 0.0)
    return power


class AmpModule(pl.LightningModule):
    def __init__(self, run_config: RunConfig, groups: list[str], reference: list[float] | None = None,
                 describe_setting: Callable[[int], str] = str) -> None:
        super().__init__()
        self.run_config = run_config
        self.net = build_wavenet(run_config.model)
        self.groups = list(groups)  # per knob setting of the dataset: train | val | test | response
        self.describe_setting = describe_setting  # how an error names a knob setting (its index by default)
        train = run_config.train
        self.stft_loss = MultiResolutionSTFTLoss() if train.loss.kind == "esr_stft" else None
        self._accumulator: ESRAccumulator | None = None
        self._first_bad: tuple[torch.Tensor, torch.Tensor] | None = None  # (step or -1, loss) on the device
        self._steps: torch.Tensor | None = None
        self.validated_at_step = -1  # the optimiser step of the last validation (-1: none yet)
        # A buffer, not saved: it moves to the training device with the module, once.
        self.register_buffer("reference", None, persistent=False)
        if train.loss.reference != "batch":
            if reference is None:
                raise ValueError("train.loss.reference 'dataset'/'setting' needs the training settings' reference power")
            per_setting = torch.tensor(reference, dtype=torch.float32)
            trained = per_setting[[g == "train" for g in self.groups]]
            mean = float(trained.mean())
            if train.loss.reference == "dataset":
                per_setting = torch.full_like(per_setting, mean)
            # A floor keeps a nearly silent setting from outweighing all others by orders of magnitude.
            self.reference = per_setting.clamp_min(max(train.loss.setting_power_floor * mean, 1e-12))

    def forward(self, x: torch.Tensor, controls: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x, controls)  # an unconditioned WaveNet ignores controls

    def _loss(self, pred: torch.Tensor, target: torch.Tensor, setting: torch.Tensor) -> torch.Tensor:
        train = self.run_config.train
        if self.reference is None:
            loss = esr(pred, target, train.loss.pre_emphasis)
        else:
            error, _ = esr_parts(pred, target, train.loss.pre_emphasis, per_item=True)
            samples = target.size(-1) - (train.loss.pre_emphasis != 0.0)
            loss = (error / (samples * self.reference[setting])).mean()
        if train.loss.kind == "esr_dc":
            loss = loss + train.loss.aux_weight * dc_loss(pred, target)
        elif self.stft_loss is not None:
            loss = loss + train.loss.aux_weight * self.stft_loss(pred, target)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(self(batch["input"], batch["controls"]), batch["target"], batch["setting"])
        self._watch_loss(loss)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch["input"].shape[0])
        return loss

    # A non-finite loss is noted on the device and raised every FINITE_CHECK_STEPS steps and before
    # every validation: reading it on the host each step would make a GPU wait for every step.
    def _watch_loss(self, loss: torch.Tensor) -> None:
        loss = loss.detach()
        if self._first_bad is None or self._first_bad[0].device != loss.device:
            self._first_bad = (torch.full((), -1, dtype=torch.long, device=loss.device),
                               torch.zeros((), dtype=loss.dtype, device=loss.device))
            self._steps = torch.zeros((), dtype=torch.long, device=loss.device)
        step, value = self._first_bad
        new = (step < 0) & ~torch.isfinite(loss)
        self._first_bad = (torch.where(new, self._steps, step), torch.where(new, loss, value))
        self._steps += 1

    def check_finite(self) -> None:
        """Raise TrainingDiverged if a training loss so far was nan or inf (one host sync)."""
        if self._first_bad is None or int(self._first_bad[0]) < 0:
            return
        step, value = int(self._first_bad[0]), float(self._first_bad[1])
        raise TrainingDiverged(
            f"training loss became {value} at step {step}; lower train.learning_rate "
            f"(now {self.run_config.train.learning_rate}) or train.gradient_clip")

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if (batch_idx + 1) % FINITE_CHECK_STEPS == 0:
            self.check_finite()

    def on_train_epoch_end(self) -> None:
        self.check_finite()

    # Validation renders whole spans and accumulates error/energy per knob setting, always with
    # REPORTED_PRE_EMPHASIS, so runs with different loss settings are compared on one scale.
    def on_validation_epoch_start(self) -> None:
        self.check_finite()  # before early stopping or the checkpoint see a nan validation ESR
        self._accumulator = ESRAccumulator()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._accumulator.update(predict_span(self.net, batch), batch["target"], batch["setting"])

    def on_validation_epoch_end(self) -> None:
        metrics = split_metrics(self._accumulator, self.groups, self.describe_setting)  # raises on a nan setting
        self._accumulator = None
        self.validated_at_step = self.global_step
        for name, value in metrics.items():
            if value == value:  # nan: that number does not exist for this dataset
                self.log(f"val_{name}", value, prog_bar=name == PRIMARY)

    def configure_optimizers(self) -> dict[str, Any]:
        train = self.run_config.train
        optimizer = torch.optim.Adam(self.parameters(), lr=train.learning_rate)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=train.lr_decay, patience=train.lr_patience)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": MONITOR, "interval": "epoch",
                                 "frequency": train.val_every_epochs}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ampstudy_config"] = to_dict(self.run_config)
