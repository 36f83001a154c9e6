"""LightningModule around the pure WaveNet: ESR loss with pre-emphasis, whole-signal metrics.

It holds the network as `self.net` (so the nn.Module can be exported alone) and the frozen run
config, which is also written into every checkpoint under `ampstudy_config`.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch

from ampmodel.losses import MultiResolutionSTFTLoss, dc_loss, esr, pre_emphasis
from ampmodel.metrics import ESRAccumulator
from ampmodel.wavenet import WaveNet
from foundation.configs import to_dict
from foundation.errors import TrainingDiverged
from training.run_config import RunConfig


class AmpModule(pl.LightningModule):
    def __init__(self, run_config: RunConfig, held_out_settings: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.run_config = run_config
        self.net = WaveNet(run_config.model)
        self.held_out_settings = tuple(held_out_settings)
        train = run_config.train
        self.stft_loss = MultiResolutionSTFTLoss() if train.loss == "esr_stft" else None
        self._accumulators: dict[str, ESRAccumulator] = {}
        # 1 / mean target power per knob setting (set from the datamodule); None = plain ESR.
        self.setting_weights: torch.Tensor | None = None

    def set_target_power(self, power: list[float]) -> None:
        """With train.balance_settings, each knob setting counts in the loss as if at unit power."""
        balance = self.run_config.train.balance_settings and len(power) > 1
        self.setting_weights = 1.0 / torch.tensor(power, dtype=torch.float32) if balance else None

    def forward(self, x: torch.Tensor, controls: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x, controls)  # an unconditioned WaveNet ignores controls

    def _predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self(batch["input"], batch["controls"])

    def _loss(self, pred: torch.Tensor, target: torch.Tensor, setting: torch.Tensor | None = None) -> torch.Tensor:
        train = self.run_config.train
        if self.setting_weights is None or setting is None:
            loss = esr(pred, target, pre_emphasis=train.pre_emphasis)
        else:
            weight = self.setting_weights.to(pred.device)[setting].view(-1, 1, 1)
            p, t = pre_emphasis(pred, train.pre_emphasis), pre_emphasis(target, train.pre_emphasis)
            loss = (weight * (t - p) ** 2).sum() / ((weight * t**2).sum() + 1e-8)
        if train.loss == "esr_dc":
            loss = loss + train.aux_weight * dc_loss(pred, target)
        elif self.stft_loss is not None:
            loss = loss + train.aux_weight * self.stft_loss(pred, target)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(self._predict(batch), batch["target"], batch.get("setting"))
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"training loss became {loss.item()} at step {self.global_step}; lower train.learning_rate "
                f"(now {self.run_config.train.learning_rate}) or train.gradient_clip")
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch["input"].shape[0])
        return loss

    # Validation and test accumulate error/energy per knob setting for whole-signal ESRs, always with
    # REPORTED_PRE_EMPHASIS so runs with different loss settings are compared on one scale.
    def _start(self, stage: str) -> None:
        self._accumulators[stage] = ESRAccumulator()

    def _accumulate(self, stage: str, batch: dict[str, torch.Tensor]) -> None:
        self._accumulators[stage].update(self._predict(batch), batch["target"], batch["setting"], batch.get("mask"))

    def _finish(self, stage: str) -> dict[str, float]:
        acc = self._accumulators.pop(stage)
        metrics = {f"{stage}_esr": acc.esr(), f"{stage}_esr_mean_over_settings": acc.mean_over_settings()}
        per_setting = acc.per_setting()
        for setting, value in per_setting.items():
            metrics[f"{stage}_esr_setting_{setting}"] = value
        held_out, seen = acc.held_out_and_seen(self.held_out_settings)
        if held_out:
            metrics[f"{stage}_esr_held_out_settings"] = acc.esr(held_out)
            metrics[f"{stage}_esr_seen_settings"] = acc.esr(seen) if seen else math.nan
        for name, value in metrics.items():
            self.log(name, value, prog_bar=name == f"{stage}_esr")
        return metrics

    def on_validation_epoch_start(self) -> None:
        self._start("val")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._accumulate("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._finish("val")

    def on_test_epoch_start(self) -> None:
        self._start("test")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._accumulate("test", batch)

    def on_test_epoch_end(self) -> None:
        self._finish("test")

    def configure_optimizers(self) -> dict[str, Any]:
        train = self.run_config.train
        optimizer = torch.optim.Adam(self.parameters(), lr=train.learning_rate)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=train.lr_decay, patience=train.lr_patience)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": "val_esr", "interval": "epoch",
                                 "frequency": train.val_every_epochs}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ampstudy_config"] = to_dict(self.run_config)
