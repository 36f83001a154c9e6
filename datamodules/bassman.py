"""BassmanDataModule: training segments and whole evaluation spans of the cached SPICE dataset.

Every item is a dict:
    input    (1, L + rf - 1) float32  the real signal, rf - 1 samples of left context included
                                      (zeros before the start of a recording: its true history)
    target   (1, L) float32           the SPICE output aligned with the model's "valid" output
    controls (4,) float32             knob positions (volume, treble, bass, middle) in 0..1
    setting  () long                  index into dm.settings
Training items are random segments (L = segment_samples) from the train regions of the
training-group settings, drawn across all of them, so every batch mixes many knob settings; they
are gathered on `device` (datamodules/segments.py), so a GPU run copies its audio there once.
Evaluation items are whole spans (batch size 1, L = the span's length): for a training-group
setting the val (or test) regions of its input, for a val (or test) group setting all of its
input. A span is one signal, so its ESR is a whole-signal ESR with nothing counted twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.config import DataConfig, PotSettings
from datamodules.dataset import LoadedDataset, load_dataset, locate_dataset, prepare_dataset
from datamodules.dataset_plan import Region
from datamodules.segments import RandomSegments, SegmentBatches
from foundation.errors import AmpStudyError
from foundation.knobs import KNOB_NAMES

EVAL_SPLITS = ("val", "test", "response")


def merged_spans(regions: list[Region], input_key: str, split: str) -> list[tuple[int, int]]:
    """Contiguous [start, end) stretches of one input's regions of `split`."""
    spans: list[list[int]] = []
    for region in regions:
        if region.input != input_key or region.split != split:
            continue
        if spans and spans[-1][1] == region.start:
            spans[-1][1] = region.end
        else:
            spans.append([region.start, region.end])
    return [(s, e) for s, e in spans]


class AudioItems(Dataset):
    """Slices (setting, start, end) of a setting's input and target into items."""

    def __init__(self, data: LoadedDataset, receptive_field: int, spans: list[tuple[int, int, int]] = ()):
        self.data = data
        self.controls = [np.asarray(p.as_tuple(), dtype=np.float32) for p in data.settings]
        self.context = receptive_field - 1
        self.spans = list(spans)

    def __len__(self) -> int:
        return len(self.spans)

    def __getitem__(self, key: int | tuple[int, int, int]) -> dict[str, Any]:
        setting, start, end = self.spans[key] if isinstance(key, int) else key
        x = self.data.inputs[self.data.input_of[setting]]
        lo = start - self.context
        inp = x[max(lo, 0):end]
        if lo < 0:  # every recording starts in silence: zeros are its true history
            inp = np.concatenate([np.zeros(-lo, dtype=np.float32), inp])
        return {
            "input": torch.from_numpy(np.ascontiguousarray(inp, dtype=np.float32)).unsqueeze(0),
            "target": torch.from_numpy(np.array(self.data.targets[setting][start:end])).unsqueeze(0),
            "controls": torch.from_numpy(self.controls[setting]),
            "setting": torch.tensor(setting, dtype=torch.long),
        }


class BassmanDataModule(pl.LightningDataModule):
    def __init__(self, cfg: DataConfig, receptive_field: int, segment_samples: int, batch_size: int,
                 num_workers: int = 0, *, seed: int | None = None, progress: bool = True,
                 device: torch.device | str = "cpu"):
        super().__init__()
        if receptive_field < 1 or segment_samples < 1 or batch_size < 1:
            raise AmpStudyError("receptive_field, segment_samples and batch_size must all be >= 1")
        self.cfg = cfg
        self.receptive_field = receptive_field
        self.segment_samples = segment_samples
        self.batch_size = batch_size
        self.num_workers = num_workers  # evaluation loaders only: training batches are gathered on `device`
        self.device = torch.device(device)
        self.seed = cfg.seed if seed is None else seed
        self.progress = progress
        self.sample_rate = cfg.sample_rate
        self._data: LoadedDataset | None = None
        self.dataset_dir: Path | None = None

    # ------------------------------------------------------------------ lifecycle
    def prepare_data(self) -> None:
        prepare_dataset(self.cfg, progress=self.progress)  # once per process; instant when cached

    def setup(self, stage: str | None = None) -> None:
        if self._data is not None:
            return
        self.dataset_dir = locate_dataset(self.cfg)
        self._data = load_dataset(self.dataset_dir)

    @property
    def data(self) -> LoadedDataset:
        if self._data is None:
            raise AmpStudyError("BassmanDataModule: call prepare_data() and setup() before using the data")
        return self._data

    @property
    def settings(self) -> list[PotSettings]:
        return self.data.settings

    @property
    def groups(self) -> list[str]:
        return self.data.groups

    @property
    def manifest(self) -> dict[str, Any]:
        return self.data.manifest

    def describe_setting(self, index: int) -> str:
        """'7 (volume 0.12, treble 0.60, bass 0.40, middle 0.55)': a setting as an error message names it."""
        pots = self.data.settings[index]
        return f"{index} ({', '.join(f'{k} {v:.2f}' for k, v in zip(KNOB_NAMES, pots.as_tuple()))})"

    def settings_in(self, *groups: str) -> list[int]:
        return [i for i, g in enumerate(self.data.groups) if g in groups]

    # ------------------------------------------------------------------ index plans
    def split_spans(self, split: str, setting: int) -> list[tuple[int, int]]:
        """Contiguous audio stretches of `split` for one setting (a non-training group: all of its audio)."""
        data = self.data
        key = data.input_of[setting]
        if data.groups[setting] == "train":
            return merged_spans(data.regions, key, split) if split in ("train", "val", "test") else []
        return [(0, len(data.inputs[key]))] if data.groups[setting] == split else []

    def eval_spans(self, split: str) -> list[tuple[int, int, int]]:
        """(setting, start, end) of every span evaluated for `split` ('val', 'test' or 'response')."""
        if split not in EVAL_SPLITS:
            raise AmpStudyError(f"split must be one of {', '.join(EVAL_SPLITS)}, got '{split}'")
        return [(i, s, e) for i in range(len(self.data.settings)) for s, e in self.split_spans(split, i)]

    def _train_segment_candidates(self) -> list[tuple[int, int, int]]:
        candidates = [(i, s, e - self.segment_samples) for i in self.settings_in("train")
                      for s, e in self.split_spans("train", i) if e - s >= self.segment_samples]
        if not candidates:
            longest = max((e - s for i in self.settings_in("train") for s, e in self.split_spans("train", i)),
                          default=0)
            raise AmpStudyError(
                f"segment_samples {self.segment_samples} is longer than every contiguous stretch of "
                f"training audio (longest {longest} samples); lower segment_samples or raise data.audio.region_seconds")
        return candidates

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> SegmentBatches:
        """One epoch = about as many segments as the training audio holds, drawn anew every epoch."""
        candidates = self._train_segment_candidates()
        train_samples = sum(hi - lo + self.segment_samples for _, lo, hi in candidates)
        epoch_len = max(1, train_samples // self.segment_samples)
        sampler = RandomSegments(candidates, self.segment_samples, epoch_len, self.seed)
        return SegmentBatches(self.data, sampler, self.receptive_field, self.batch_size, self.device,
                              dataset=AudioItems(self.data, self.receptive_field))

    def eval_dataloader(self, split: str) -> DataLoader:
        """One whole span per batch (spans differ in length)."""
        return DataLoader(AudioItems(self.data, self.receptive_field, self.eval_spans(split)), batch_size=1,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")

    # ------------------------------------------------------------------ examples
    def example(self, split: str, setting: int, seconds: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Up to `seconds` of contiguous `split` audio for one setting, for logging audio/plots.

        Returns (input with receptive_field - 1 samples of left context, target, controls (4,)).
        Picks the loudest stretch (by target energy, 0.1 s steps) so examples are not silence.
        """
        spans = self.split_spans(split, setting)
        if not spans:
            raise AmpStudyError(f"setting {setting} ({self.data.groups[setting]} group) has no '{split}' audio")
        n = min(int(round(seconds * self.sample_rate)), max(e - s for s, e in spans))
        target = self.data.targets[setting].astype(np.float64)
        energy = np.concatenate([[0.0], np.cumsum(target**2)])
        hop = max(1, self.sample_rate // 10)
        best, best_energy = spans[0][0], -1.0
        for s, e in spans:
            for start in range(s, e - n + 1, hop):
                if energy[start + n] - energy[start] > best_energy:
                    best, best_energy = start, energy[start + n] - energy[start]
        item = AudioItems(self.data, self.receptive_field)[(setting, best, best + n)]
        return item["input"][0].numpy(), item["target"][0].numpy(), item["controls"].numpy()
