"""Building a WaveNet: from a config (the family it names), a preset, or saved files that may come
from someone else (a model registry).

For saved files, two rules, shared by ampstudy's own loader (training/model_io.py) and by the copy of this package
that travels with every registered model (training/amp_pyfunc_model.py):
- the architecture is checked before anything is allocated: unknown keys and wrong types are
  refused here, sizes against the limits in `WaveNetConfig.__post_init__`;
- weights are read with `torch.load(weights_only=True)`: tensors only, never pickled objects, so
  a crafted state_dict.pt cannot run code.
Errors are ValueErrors with one line that names the field or file.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Any

import torch

from .config import PRESETS, ModelConfigError, WaveNetConfig
from .nam_wavenet import NamWaveNet
from .wavenet import WaveNet, WaveNetBase


def build_wavenet(cfg: WaveNetConfig) -> WaveNetBase:
    """The network of the family `cfg.family` names: WaveNet (paper) or NamWaveNet (nam)."""
    return NamWaveNet(cfg) if cfg.family == "nam" else WaveNet(cfg)


def from_preset(name: str, **overrides) -> WaveNetBase:
    """A preset ('WaveNet1'/'WaveNet2'/'WaveNet3', 'nam-standard'/...), optionally with fields overridden."""
    if name not in PRESETS:
        raise ModelConfigError(f"unknown WaveNet preset '{name}'; choose one of {', '.join(PRESETS)}")
    return build_wavenet(dataclasses.replace(PRESETS[name], **overrides))


class ModelFileError(ValueError):
    """A weights file that is not a plain tensor file or does not fit the architecture."""


def config_from_dict(table: Any) -> WaveNetConfig:
    """WaveNetConfig from a plain (JSON) mapping, e.g. config.json's run_config.model."""
    if not isinstance(table, dict):
        raise ModelConfigError(f"model: expected a table of architecture settings, got {type(table).__name__}")
    fields = {f.name for f in dataclasses.fields(WaveNetConfig)}
    unknown = sorted(set(table) - fields)
    if unknown:
        raise ModelConfigError(f"{unknown[0]}: unknown architecture setting; known: {', '.join(sorted(fields))}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}  # JSON lists: the tuple fields
    return WaveNetConfig(**values)  # types and size limits: WaveNetConfig.__post_init__


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors in `path`, read with weights_only=True; pickled objects are refused, not run."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message is a paragraph; the line naming the refused global is the useful part.
        found = [line.strip() for line in str(err).splitlines() if "GLOBAL" in line]
        detail = found[0] if found else "weights_only load failed"
        raise ModelFileError(f"{path}: refused: not a plain tensor file, and pickled Python objects are never "
                             f"loaded ({detail})") from None
    except Exception as err:  # torch raises many types for a file that is no torch archive at all
        raise ModelFileError(f"{path}: not a readable torch weights file ({_first_line(err)})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ModelFileError(f"{path}: expected a state dict (names -> tensors), got {type(state).__name__}")
    return state


def wavenet_from_files(model_table: Any, weights_path: str | Path) -> WaveNetBase:
    """A WaveNet of the config's family in eval mode: architecture checked first, then built, then
    its weights loaded."""
    return load_weights(build_wavenet(config_from_dict(model_table)), weights_path)


def load_weights(net: WaveNetBase, weights_path: str | Path) -> WaveNetBase:
    """`net` with the weights of `weights_path` (see read_state_dict), in eval mode."""
    state = read_state_dict(weights_path)
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise ModelFileError(f"{weights_path}: the weights do not fit the architecture in config.json "
                             f"({_first_line(err)})") from None
    return net.eval()


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(err).__name__
