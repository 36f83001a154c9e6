"""Whole-signal ESR of a network on one split of the SPICE dataset (validation or held-out test)."""

from __future__ import annotations

import math
from typing import Any

import torch

from ampmodel.metrics import REPORTED_PRE_EMPHASIS, ESRAccumulator
from ampmodel.wavenet import WaveNet
from datamodules.bassman import BassmanDataModule
from datamodules.config import DataConfig
from foundation.configs import to_dict
from training.model_io import LoadedModel


def evaluate_net(net: WaveNet, datamodule: BassmanDataModule, split: str) -> dict[str, Any]:
    """ESR over every sample of `split` ('val' or 'test'): overall, per setting, held-out vs seen."""
    loader = {"val": datamodule.val_dataloader, "test": datamodule.test_dataloader}[split]()
    acc = ESRAccumulator(REPORTED_PRE_EMPHASIS)
    net.eval()
    with torch.inference_mode():
        for batch in loader:
            pred = net(batch["input"], batch["controls"])  # an unconditioned net ignores controls
            acc.update(pred, batch["target"], batch["setting"], batch.get("mask"))
    per_setting = acc.per_setting()
    held_out, seen = acc.held_out_and_seen(datamodule.test_settings_held_out)
    return {
        "esr": acc.esr(),
        "esr_mean_over_settings": acc.mean_over_settings(),
        "esr_per_setting": {datamodule.settings[s].label(): v for s, v in per_setting.items()},
        "settings_table": [{"setting": s, **to_dict(datamodule.settings[s]), "held_out": s in held_out,
                            f"{split}_esr": v} for s, v in per_setting.items()],
        "esr_held_out_settings": acc.esr(held_out) if held_out else math.nan,
        "esr_seen_settings": acc.esr(seen) if seen else math.nan,
        "pre_emphasis": REPORTED_PRE_EMPHASIS,
    }


def evaluate_model(loaded: LoadedModel, data_cfg: DataConfig | None = None, split: str = "test",
                   batch_size: int = 8) -> dict[str, Any]:
    """Evaluate a saved model on its own dataset (or `data_cfg`), preparing the data if needed."""
    data_cfg = data_cfg or loaded.run_config.data
    datamodule = BassmanDataModule(data_cfg, receptive_field=loaded.net.receptive_field,
                                   segment_samples=loaded.run_config.train.segment_samples,
                                   batch_size=batch_size)
    datamodule.prepare_data()
    datamodule.setup("test" if split == "test" else "validate")
    return evaluate_net(loaded.net, datamodule, split)
