"""Training batches of random segments, gathered where the model trains (CPU or GPU).

`RandomSegments` decides which (setting, start, end) segments an epoch visits: numpy's generator
seeded by (seed, epoch), so runs are reproducible. `SegmentBatches` turns those keys into batches
without a per-item Python slice and collate and without a host-to-device copy per step: the
training audio is copied to the device once (each input once, with receptive_field - 1 zeros
before it, its true history, and each training setting's target), an epoch's segment starts go
over in one copy, and every batch is a gather from strided views of those tensors. The items are
exactly those `bassman.AudioItems` makes of the same keys (tests/test_datamodule.py checks it),
so a run draws the same batches on every device.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np
import torch


class RandomSegments:
    """Yields (setting, start, end) keys of random train segments; reshuffled per epoch."""

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

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        picks = rng.choice(len(self.candidates), size=self.epoch_len, p=self.weights)
        for c in picks:
            setting, lo, hi = self.candidates[int(c)]
            start = int(rng.integers(lo, hi + 1))
            yield (setting, start, start + self.segment)


class SegmentBatches:
    """Iterable of training batches (dicts of input, target, controls, setting) on `device`.

    data: a LoadedDataset; `dataset` (the AudioItems of the same data) names the items for
    inspection. len() is the number of batches per epoch; the last batch may be smaller.
    """

    def __init__(self, data: Any, sampler: RandomSegments, receptive_field: int, batch_size: int,
                 device: torch.device | str = "cpu", dataset: Any = None) -> None:
        self.sampler = sampler
        self.dataset = dataset
        self.batch_size = batch_size
        self.context = receptive_field - 1
        self.segment = sampler.segment
        self.device = torch.device(device)
        settings = sorted({setting for setting, _, _ in sampler.candidates})
        keys = sorted({data.input_of[s] for s in settings})
        pad = np.zeros(self.context, dtype=np.float32)
        in_start, pieces, at = {}, [], 0
        for key in keys:
            x = np.asarray(data.inputs[key], dtype=np.float32)
            pieces += [pad, x]
            in_start[key] = at + self.context  # sample 0 of this input in the flat tensor
            at += self.context + len(x)
        n_settings = len(data.settings)
        self.input_offset = np.zeros(n_settings, dtype=np.int64)
        self.target_offset = np.zeros(n_settings, dtype=np.int64)
        targets, at = [], 0
        for s in settings:
            self.input_offset[s] = in_start[data.input_of[s]]
            self.target_offset[s] = at
            targets.append(np.asarray(data.targets[s], dtype=np.float32))
            at += len(targets[-1])
        self.inputs = torch.from_numpy(np.concatenate(pieces)).to(self.device)
        self.targets = torch.from_numpy(np.concatenate(targets)).to(self.device)
        self.controls = torch.tensor([p.as_tuple() for p in data.settings], dtype=torch.float32, device=self.device)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        keys = np.array(list(self.sampler), dtype=np.int64).reshape(-1, 3)
        setting = torch.from_numpy(keys[:, 0]).to(self.device)
        first_input = torch.from_numpy(self.input_offset[keys[:, 0]] + keys[:, 1] - self.context).to(self.device)
        first_target = torch.from_numpy(self.target_offset[keys[:, 0]] + keys[:, 1]).to(self.device)
        # Strided views: row i is the window starting at sample i; indexing copies only the rows asked for.
        input_windows = self.inputs.unfold(0, self.segment + self.context, 1)
        target_windows = self.targets.unfold(0, self.segment, 1)
        for b in range(0, len(keys), self.batch_size):
            rows = slice(b, b + self.batch_size)
            yield {"input": input_windows[first_input[rows]].unsqueeze(1),
                   "target": target_windows[first_target[rows]].unsqueeze(1),
                   "controls": self.controls[setting[rows]],
                   "setting": setting[rows]}
