"""Whole-signal ESR of a network on the validation, test or response spans of the SPICE dataset.

Each span goes through `ampmodel.streaming.render`, the project's one whole-signal inference
path (the same code renders a wav and serves the registered model), together with its rf - 1
samples of real context, whose outputs are dropped.

Spans run on the net's device in float32 (`full_precision`), also when training used mixed
precision. All numbers use pre-emphasis REPORTED_PRE_EMPHASIS and each knob setting's own
whole-signal ESR (ampmodel/metrics.py). A split is *scored* on the settings never trained on (the
validation group for 'val', the test group for 'test') when it has any, else on all of its settings
(a dataset of listed settings: their held-back audio). The numbers of a split:

- `esr_tail_aware` (PRIMARY: objective, checkpoint, LR schedule, early stopping, pruning, the
  promotion gate): the scored settings' floored geometric mean, raised when their worst setting is
  more than 10x it (`ampmodel.metrics.tail_aware_esr`). ESR_DEFINITION names this choice.
- `esr_geomean_floored`, `esr_mean_scored_settings`, `esr_worst_scored_setting`: its parts, and the
  arithmetic mean, over the scored settings.
- `esr_geomean_seen_settings` / `esr_geomean_unseen_settings`: unfloored geometric means over the
  training-group settings (their held-back audio) / the settings never trained on: their ratio is
  the knob generalisation gap; `esr_worst_unseen_setting`.
- `esr_pooled`, `esr_pooled_seen_settings`, `esr_pooled_unseen_settings`: all spans as one signal
  (dominated by the loudest settings).

Earlier runs logged `esr` (pooled until 2026-11-26, then the unfloored geometric mean), and
`esr_seen_settings` / `esr_unseen_settings` / `esr_worst_setting` / `esr_mean_over_settings`:
those keys are no longer written, so an MLflow chart never mixes two meanings under one name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ampmodel.wavenet import WaveNetBase
from ampmodel.losses import REPORTED_PRE_EMPHASIS
from ampmodel.metrics import AUDIBILITY_FLOOR_ESR, TAIL_RATIO, ESRAccumulator
from ampmodel.streaming import render
from datamodules.bassman import BassmanDataModule
from datamodules.config import DataConfig
from foundation.configs import to_dict
from foundation.errors import TrainingDiverged

PRIMARY = "esr_tail_aware"  # the key of the number every decision uses (module docstring)
# What PRIMARY means, recorded in every run's tags, every registered version's tags and every study's
# fingerprint: numbers made under another definition ("typical-setting" until 2026-12-03, the pooled
# ESR before 2026-11-26) are never silently compared with these.
ESR_DEFINITION = f"tail-aware(floor={AUDIBILITY_FLOOR_ESR:g},tail_ratio={TAIL_RATIO:g})"
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


def scored_settings(acc: ESRAccumulator, groups: list[str]) -> tuple[list[int], str]:
    """The settings a split is scored on and what they are: ("unseen", never trained on) when the
    split has any, else ("all", every evaluated setting)."""
    unseen = [s for s in acc.settings() if groups[s] in ("val", "test")]
    return (unseen, "unseen") if unseen else (acc.settings(), "all")


def split_metrics(acc: ESRAccumulator, groups: list[str],
                  describe_setting: Callable[[int], str] = str) -> dict[str, float]:
    """The scalar numbers of one evaluated split (see the module docstring); nan where undefined.
    A setting whose ESR is not finite raises TrainingDiverged naming it (`describe_setting(index)`)."""
    for setting, value in acc.per_setting().items():
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"ESR is {value} at knob setting {describe_setting(setting)} ({groups[setting]} group): the "
                "model's output or the SPICE target there is not finite; lower train.learning_rate, or rebuild "
                "the dataset with `ampstudy data` if its files were changed")
    evaluated = acc.settings()
    seen = [s for s in evaluated if groups[s] == "train"]
    unseen = [s for s in evaluated if groups[s] in ("val", "test")]
    scored, _ = scored_settings(acc, groups)
    return {
        PRIMARY: acc.tail_aware(scored),
        "esr_geomean_floored": acc.geometric_mean(scored, AUDIBILITY_FLOOR_ESR),
        "esr_mean_scored_settings": acc.mean(scored),
        "esr_worst_scored_setting": acc.worst_setting(scored),
        "esr_geomean_seen_settings": acc.geometric_mean(seen),
        "esr_geomean_unseen_settings": acc.geometric_mean(unseen),
        "esr_worst_unseen_setting": acc.worst_setting(unseen),
        "esr_pooled": acc.esr(scored),
        "esr_pooled_seen_settings": acc.esr(seen),
        "esr_pooled_unseen_settings": acc.esr(unseen),
    }


def evaluate_net(net: WaveNetBase, datamodule: BassmanDataModule, split: str) -> dict[str, Any]:
    """ESR over every sample of `split` ('val' or 'test'): the split's numbers, which settings it was
    scored on (`scored_on`: "unseen" or "all"), each scored setting's ESR by index
    (`per_scored_setting`, what the promotion gate compares) and a table of every setting."""
    net.eval()
    acc = accumulate(net, datamodule.eval_dataloader(split))
    metrics: dict[str, Any] = split_metrics(acc, datamodule.groups, datamodule.describe_setting)
    scored, metrics["scored_on"] = scored_settings(acc, datamodule.groups)
    per_setting = acc.per_setting()
    metrics["per_scored_setting"] = {s: per_setting[s] for s in scored}
    metrics["settings_table"] = [
        {"setting": s, **to_dict(datamodule.settings[s]), "group": datamodule.groups[s], f"{split}_esr": value}
        for s, value in per_setting.items()]
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
