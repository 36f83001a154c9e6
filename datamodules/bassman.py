"""BassmanDataModule: batches of (input with receptive-field context, SPICE target, knob controls).

Every item is a dict:
    input    (1, L + rf - 1) float32  the real signal, rf - 1 samples of left context included
    target   (1, L) float32           target aligned with the model's "valid" output
    mask     (1, L) float32           1 where a sample counts towards a loss or metric
    controls (4,) float32             knob positions (volume, treble, bass, middle) in 0..1
    setting  ()  long                 index into dm.settings
Train items are random segments (L = segment_samples) from the train regions of the training
settings. Validation/test items are fixed-length windows (L = min(eval_samples, region length))
tiling every val/test region exactly: a region's last window is shifted back to end on the
region's end and its mask zeroes the samples the previous window already covered, so summing
mask * error^2 and mask * target^2 over all batches gives the whole-signal ESR.
Held-out settings appear only in test, where all their regions are used (their audio was never
a training target for that setting).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from datamodules.config import DataConfig, PotSettings
from datamodules.dataset import LoadedDataset, load_dataset, locate_dataset, prepare_dataset
from datamodules.knob_settings import held_out_indices, resolve_settings
from foundation.errors import AmpStudyError


def merged_spans(regions: list[tuple[int, int, str]], split: str | None) -> list[tuple[int, int]]:
    """Contiguous [start, end) stretches of regions of `split` (None: all regions)."""
    spans: list[list[int]] = []
    for start, end, name in regions:
        if split is not None and name != split:
            continue
        if spans and spans[-1][1] == start:
            spans[-1][1] = end
        else:
            spans.append([start, end])
    return [(s, e) for s, e in spans]


class AudioItems(Dataset):
    """Slices (setting, start, length, valid_from) of the shared input/target arrays into items."""

    def __init__(self, data: LoadedDataset, receptive_field: int, windows: list[tuple[int, int, int, int]] = ()):
        self.x = data.input
        self.targets = data.targets
        self.controls = [np.asarray(p.as_tuple(), dtype=np.float32) for p in data.settings]
        self.context = receptive_field - 1
        self.windows = list(windows)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, key: int | tuple[int, int, int, int]) -> dict[str, Any]:
        setting, start, length, valid_from = self.windows[key] if isinstance(key, int) else key
        lo = start - self.context
        inp = self.x[max(lo, 0):start + length]
        if lo < 0:  # the file starts in silence: zeros are the true history
            inp = np.concatenate([np.zeros(-lo, dtype=np.float32), inp])
        mask = np.ones(length, dtype=np.float32)
        mask[:valid_from] = 0.0
        return {
            "input": torch.from_numpy(np.ascontiguousarray(inp, dtype=np.float32)).unsqueeze(0),
            "target": torch.from_numpy(np.array(self.targets[setting][start:start + length])).unsqueeze(0),
            "mask": torch.from_numpy(mask).unsqueeze(0),
            "controls": torch.from_numpy(self.controls[setting]),
            "setting": torch.tensor(setting, dtype=torch.long),
        }


class RandomSegments(Sampler):
    """Yields (setting, start, length, 0) keys of random train segments; reshuffled per epoch.

    Each epoch draws from numpy's generator seeded by (seed, epoch), so runs are reproducible;
    the sampler runs in the main process, so worker processes need no seeding.
    """

    def __init__(self, candidates: list[tuple[int, int, int]], segment: int, epoch_len: int, seed: int):
        self.candidates = candidates  # (setting, first valid start, last valid start)
        counts = np.array([hi - lo + 1 for _, lo, hi in candidates], dtype=np.float64)
        self.weights = counts / counts.sum()
        self.segment = segment
        self.epoch_len = epoch_len
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.epoch_len

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        picks = rng.choice(len(self.candidates), size=self.epoch_len, p=self.weights)
        for c in picks:
            setting, lo, hi = self.candidates[int(c)]
            yield (setting, int(rng.integers(lo, hi + 1)), self.segment, 0)


def tile_windows(span: tuple[int, int], length: int, setting: int) -> list[tuple[int, int, int, int]]:
    """Windows covering [start, end) exactly once by mask (the last one overlaps, masked)."""
    start, end = span
    out = [(setting, s, length, 0) for s in range(start, end - length + 1, length)]
    covered = out[-1][1] + length if out else start
    if covered < end:
        out.append((setting, end - length, length, covered - (end - length)))
    return out


class BassmanDataModule(pl.LightningDataModule):
    def __init__(self, cfg: DataConfig, receptive_field: int, segment_samples: int, batch_size: int,
                 num_workers: int = 0, *, eval_samples: int | None = None, seed: int | None = None,
                 progress: bool = True):
        super().__init__()
        if receptive_field < 1 or segment_samples < 1 or batch_size < 1:
            raise AmpStudyError("receptive_field, segment_samples and batch_size must all be >= 1")
        self.cfg = cfg
        self.receptive_field = receptive_field
        self.segment_samples = segment_samples
        self.eval_samples = eval_samples or segment_samples
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = cfg.seed if seed is None else seed
        self.progress = progress
        self.sample_rate = cfg.sample_rate
        self._prepared: Path | None = None
        self._data: LoadedDataset | None = None
        # Known from the config alone (cheap); setup() replaces them with the manifest's copy.
        self.settings: list[PotSettings] = resolve_settings(cfg)
        self.test_settings_held_out: list[int] = held_out_indices(cfg, len(self.settings))
        self.manifest: dict[str, Any] | None = None
        self.dataset_dir: Path | None = None

    # ------------------------------------------------------------------ lifecycle
    def prepare_data(self) -> None:
        self._prepared = prepare_dataset(self.cfg, progress=self.progress)

    def setup(self, stage: str | None = None) -> None:
        if self._data is not None:
            return
        path = self._prepared or locate_dataset(self.cfg)
        data = load_dataset(path)
        self._data = data
        self.dataset_dir = path
        self.manifest = data.manifest
        self.settings = data.settings
        self.test_settings_held_out = list(data.held_out)
        self.train_settings: list[int] = [i for i in range(len(data.settings)) if i not in data.held_out]
        self.eval_length = min(self.eval_samples, min(e - s for s, e, _ in data.regions))
        self._train_candidates = self._train_segment_candidates()
        self.val_windows = self._windows("val")
        self.test_windows = self._windows("test")
        spans = merged_spans(data.regions, "train")
        # Mean power of each setting's training target: the loss divides by it so that quiet knob
        # settings (low volume) weigh as much as loud ones despite the shared target scale.
        self.target_power = [
            float(np.mean(np.concatenate([t[s:e] for s, e in spans]).astype(np.float64) ** 2)) or 1.0
            for t in data.targets]

    def _require_setup(self) -> LoadedDataset:
        if self._data is None:
            raise AmpStudyError("BassmanDataModule: call prepare_data() and setup() before using the data")
        return self._data

    # ------------------------------------------------------------------ index plans
    def _train_segment_candidates(self) -> list[tuple[int, int, int]]:
        spans = merged_spans(self._data.regions, "train")
        fitting = [(s, e) for s, e in spans if e - s >= self.segment_samples]
        if not fitting:
            longest = max(e - s for s, e in spans)
            raise AmpStudyError(
                f"segment_samples {self.segment_samples} is longer than every contiguous stretch of "
                f"training audio (longest {longest} samples); lower segment_samples or raise data.region_seconds")
        return [(i, s, e - self.segment_samples) for i in self.train_settings for s, e in fitting]

    def split_spans(self, split: str, setting: int) -> list[tuple[int, int]]:
        """Contiguous audio stretches of `split` for one setting (held-out settings: test = everything)."""
        data = self._require_setup()
        if setting in data.held_out:
            return merged_spans(data.regions, None) if split == "test" else []
        return merged_spans(data.regions, split)

    def _windows(self, split: str) -> list[tuple[int, int, int, int]]:
        settings = range(len(self.settings)) if split == "test" else self.train_settings
        windows = []
        for i in settings:
            for span in self.split_spans(split, i):
                windows += tile_windows(span, self.eval_length, i)
        return windows

    # ------------------------------------------------------------------ loaders
    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, **kwargs)

    def train_dataloader(self) -> DataLoader:
        data = self._require_setup()
        train_samples = sum(hi - lo + self.segment_samples for _, lo, hi in self._train_candidates)
        epoch_len = max(1, train_samples // self.segment_samples)
        sampler = RandomSegments(self._train_candidates, self.segment_samples, epoch_len, self.seed)
        return self._loader(AudioItems(data, self.receptive_field), sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(AudioItems(self._require_setup(), self.receptive_field, self.val_windows))

    def test_dataloader(self) -> DataLoader:
        return self._loader(AudioItems(self._require_setup(), self.receptive_field, self.test_windows))

    # ------------------------------------------------------------------ examples
    def example(self, split: str, setting: int, seconds: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Up to `seconds` of contiguous `split` audio for one setting, for logging audio/plots.

        Returns (input with receptive_field - 1 samples of left context, target, controls (4,)).
        Picks the loudest stretch (by target energy, 0.1 s steps) so examples are not silence.
        """
        data = self._require_setup()
        spans = self.split_spans(split, setting)
        if not spans:
            raise AmpStudyError(f"setting {setting} has no '{split}' audio (held-out settings are test-only; "
                                f"splits with audio: {sorted({r[2] for r in data.regions})})")
        n = min(int(round(seconds * self.sample_rate)), max(e - s for s, e in spans))
        target = data.targets[setting].astype(np.float64)
        energy = np.concatenate([[0.0], np.cumsum(target**2)])
        hop = max(1, self.sample_rate // 10)
        best, best_energy = spans[0][0], -1.0
        for s, e in spans:
            for start in range(s, e - n + 1, hop):
                if energy[start + n] - energy[start] > best_energy:
                    best, best_energy = start, energy[start + n] - energy[start]
        item = AudioItems(data, self.receptive_field)[(setting, best, n, 0)]
        return item["input"][0].numpy(), item["target"][0].numpy(), item["controls"].numpy()
