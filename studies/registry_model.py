"""The MLflow pyfunc flavour of a trained amp model, as registered by `ampstudy promote`.

    import mlflow, numpy as np
    amp = mlflow.pyfunc.load_model("models:/bassman-wavenet@champion")
    out = amp.predict(np.zeros(44100, dtype=np.float32))           # 1-D float array in, same length out
    out = amp.predict(di, params={"volume": 0.8, "treble": 0.6})     # knobs as params (conditioned models)
    out = amp.predict(pd.DataFrame({"audio": di, "volume": 0.8}))    # or as DataFrame columns

Input: the DI signal at the model's sample rate (tag/metadata `sample_rate`), full scale (+-1.0) =
the input volts used in training. Output: float32 of the same length, the amp output on the scale
of training targets (the simulated output volts divided by one peak scale shared by all knob
settings, recorded as `target_scale_volts` in config.json). Knobs are positions
0..1; an unconditioned model (trained at fixed knobs) ignores them. The signature declares the
knobs as params and the 1-D output; the input is checked by `predict` itself, because MLflow's
schema enforcement cannot accept both a bare array and a DataFrame.

The model directory (config.json, state_dict.pt, model.ts) is the artifact `model_dir`; inference
runs the TorchScript copy, so loading needs torch, numpy and pandas but not ampstudy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

from foundation.knobs import KNOB_NAMES

BLOCK = 1 << 16  # output samples per forward pass: bounds memory for long inputs


class BassmanWaveNetModel(mlflow.pyfunc.PythonModel):
    """Loads the TorchScript WaveNet from the `model_dir` artifact; renders whole signals."""

    def load_context(self, context: Any) -> None:
        import torch

        directory = Path(context.artifacts["model_dir"])
        meta = json.loads((directory / "config.json").read_text())
        self.net = torch.jit.load(str(directory / "model.ts"), map_location="cpu").eval()
        self.receptive_field = int(self.net.receptive_field)
        self.conditioned = bool(self.net.conditioned)
        self.sample_rate = int(meta.get("data", {}).get("sample_rate", 44100))

    # model_input is left unannotated on purpose: MLflow reads a type hint there as an input schema.
    def predict(self, context, model_input, params=None):
        audio, knobs = split_input(model_input, params or {})
        return self.render(audio, knobs)

    def render(self, audio: np.ndarray, knobs: dict[str, float]) -> np.ndarray:
        import torch

        controls = None
        if self.conditioned:
            bad = {k: v for k, v in knobs.items() if not 0.0 <= v <= 1.0}
            if bad:
                raise ValueError(f"knob positions must be in 0..1, got {bad}")
            controls = torch.tensor([[knobs[k] for k in KNOB_NAMES]], dtype=torch.float32)
        history = self.receptive_field - 1
        padded = np.concatenate([np.zeros(history, np.float32), audio])  # "silence before the signal"
        out = np.empty(len(audio), np.float32)
        with torch.inference_mode():
            for start in range(0, len(audio), BLOCK):
                stop = min(start + BLOCK, len(audio))
                x = torch.from_numpy(padded[start:stop + history]).view(1, 1, -1)
                out[start:stop] = self.net(x, controls).view(-1).numpy()
        return out


def split_input(model_input: Any, params: dict[str, Any]) -> tuple[np.ndarray, dict[str, float]]:
    """(audio as 1-D float32, knob positions) from an array, list or DataFrame plus params."""
    import pandas as pd

    knobs = {k: float(params[k]) for k in KNOB_NAMES if params.get(k) is not None}
    if isinstance(model_input, pd.DataFrame):
        if "audio" not in model_input.columns:
            if model_input.shape[1] != 1:
                raise ValueError("a DataFrame input needs an 'audio' column (plus optional volume/treble/bass/middle)")
            model_input = model_input.rename(columns={model_input.columns[0]: "audio"})
        for name in KNOB_NAMES:
            if name in model_input.columns:
                column = model_input[name].to_numpy(dtype=np.float64)
                if len(column) and not np.all(column == column[0]):
                    raise ValueError(f"column '{name}' must be constant: one knob setting per call")
                knobs[name] = float(column[0])
        audio = model_input["audio"].to_numpy(dtype=np.float32)
    else:
        audio = np.asarray(model_input, dtype=np.float32)
        if audio.ndim == 2 and 1 in audio.shape:
            audio = audio.reshape(-1)
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError(f"audio must be a non-empty 1-D float array, got shape {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise ValueError("audio contains NaN or infinite samples")
    return np.ascontiguousarray(audio), knobs


def default_knobs(data_info: dict[str, Any]) -> dict[str, float]:
    """The first knob setting seen in training: the params' defaults."""
    settings = data_info.get("settings") or [{}]
    return {k: float(settings[0].get(k, 0.5)) for k in KNOB_NAMES}


def signature(data_info: dict[str, Any]) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    defaults = default_knobs(data_info)
    return ModelSignature(
        inputs=None,  # checked in predict (see module docstring)
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,), "amp_output")]),
        params=ParamSchema([ParamSpec(k, "double", defaults[k]) for k in KNOB_NAMES]))


def log_pyfunc_model(model_dir: Path, data_info: dict[str, Any], run_id: str) -> str:
    """Log the pyfunc model into run `run_id` (artifact `pyfunc_model`); returns its model URI."""
    import mlflow
    import pandas
    import torch

    requirements = [f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}",
                    f"numpy=={np.__version__}", f"pandas=={pandas.__version__}"]
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="pyfunc_model", python_model=BassmanWaveNetModel(), artifacts={"model_dir": str(model_dir)},
            code_paths=[str(Path(__file__).resolve().parent)], signature=signature(data_info),
            pip_requirements=requirements,  # explicit: skips MLflow's slow import-capturing subprocess
            metadata={"sample_rate": data_info.get("sample_rate"), "dataset_hash": data_info.get("dataset_hash")})
    return info.model_uri
