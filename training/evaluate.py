"""Whole-signal ESR of a network on the validation, test or response spans of the SPICE dataset.

Each span goes through `ampmodel.streaming.render`, the project's one whole-signal inference
path (the same code renders a wav and serves the registered model), together with its rf - 1
samples of real context, whose outputs are dropped.

Spans run on the net's device in float32 (`full_precision`), also when training used mixed
precision. The numbers of a split:

- `esr`: the primary number (objective, checkpoint, promotion gate): the typical setting's ESR
  (`ESRAccumulator.typical`: each setting's whole-signal ESR, averaged in dB over the settings)
  over the settings never trained on (the validation group for 'val', the test group for 'test')
  when the split has any, else over all of its settings (a dataset with listed settings only).
  Always with pre-emphasis REPORTED_PRE_EMPHASIS. ESR_DEFINITION names this choice.
- `esr_seen_settings` / `esr_unseen_settings`: the same typical ESR over training-group settings
  (their held-back audio) / over settings never trained on, so their ratio is the knob
  generalisation gap; `esr_pooled`, `esr_pooled_seen_settings`, `esr_pooled_unseen_settings`:
  all spans as one signal (dominated by the loudest settings); `esr_mean_over_settings`,
  `esr_worst_setting`, `esr_worst_unseen_setting`; a table of ESR per setting.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ampmodel.layer_stack import WaveNetBase
from ampmodel.losses import REPORTED_PRE_EMPHASIS
from ampmodel.metrics import ESRAccumulator
from ampmodel.streaming import render
from datamodules.bassman import BassmanDataModule
from datamodules.config import DataConfig
from foundation.configs import to_dict

# What `esr` means, recorded in every run's tags and every study's fingerprint: numbers made under
# another definition (the pooled ESR before 2026-11-26) are never silently compared with these.
ESR_DEFINITION = "typical-setting"
ESR_DEFINITION_TAG = "esr_definition"  # run and registry-version tag holding ESR_DEFINITION


@contextmanager
def full_precision(device_type: str) -> Iterator[None]:
    """Autocast and TF32 off: a reported ESR is a float32 number whatever precision training used
    (Lightning runs validation inside the training precision's autocast)."""
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.autocast(device_type, enabled=False):
            yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def predict_span(net: WaveNetBase, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's output (1, 1, L) for one evaluation item (input with rf - 1 samples of context),
    in float32, on the net's device."""
    x = batch["input"].reshape(-1)
    with full_precision(next(net.parameters()).device.type):
        out = render(net, x, batch["controls"].reshape(-1), block_size=max(1, x.numel()))
    return out[net.receptive_field - 1:].view(1, 1, -1)


def accumulate(net: WaveNetBase, loader, acc: ESRAccumulator | None = None) -> ESRAccumulator:
    acc = acc or ESRAccumulator(REPORTED_PRE_EMPHASIS)
    for batch in loader:
        pred = predict_span(net, batch)
        acc.update(pred, batch["target"].to(pred.device), batch["setting"])
    return acc


def split_metrics(acc: ESRAccumulator, groups: list[str]) -> dict[str, float]:
    """The scalar numbers of one evaluated split (see the module docstring); nan where undefined."""
    evaluated = acc.settings()
    seen = [s for s in evaluated if groups[s] == "train"]
    unseen = [s for s in evaluated if groups[s] in ("val", "test")]
    primary = unseen or evaluated
    return {
        "esr": acc.typical(primary),
        "esr_seen_settings": acc.typical(seen),
        "esr_unseen_settings": acc.typical(unseen),
        "esr_pooled": acc.esr(primary),
        "esr_pooled_seen_settings": acc.esr(seen),
        "esr_pooled_unseen_settings": acc.esr(unseen),
        "esr_mean_over_settings": acc.mean_over_settings(),
        "esr_worst_setting": acc.worst_setting(),
        "esr_worst_unseen_setting": acc.worst_setting(unseen),
    }


def evaluate_net(net: WaveNetBase, datamodule: BassmanDataModule, split: str) -> dict[str, Any]:
    """ESR over every sample of `split` ('val' or 'test'): the split's numbers plus a table by setting."""
    net.eval()
    acc = accumulate(net, datamodule.eval_dataloader(split))
    metrics: dict[str, Any] = split_metrics(acc, datamodule.groups)
    metrics["settings_table"] = [
        {"setting": s, **to_dict(datamodule.settings[s]), "group": datamodule.groups[s], f"{split}_esr": value}
        for s, value in acc.per_setting().items()]
    return metrics


def finite_numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics that can be logged as numbers (drops tables and nan)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def evaluate_model(net: WaveNetBase, data_cfg: DataConfig, split: str = "test",
                   progress: bool = True) -> dict[str, Any]:
    """Evaluate a trained net on the dataset of `data_cfg`, preparing that dataset if needed."""
    datamodule = BassmanDataModule(data_cfg, receptive_field=net.receptive_field, segment_samples=1, batch_size=1,
                                   progress=progress)
    datamodule.prepare_data()
    datamodule.setup()
    return evaluate_net(net, datamodule, split)
