"""The registered amp model's code: MLflow runs this file when it loads or serves the model.

MLflow models-from-code: `training.mlflow_model.log_amp_model` logs this file as the python_model,
so no class is pickled, and ships beside it a copy of the ampmodel/ package (pure torch) named
`amp_wavenet_<hash of its sources>` (model_config "wavenet_package"): two models shipped with
different WaveNet code can be loaded in one process. This file imports only the standard library,
numpy, torch, mlflow and that copy: the model works in an environment without ampstudy. ampstudy
never imports it.

    import mlflow, numpy as np
    amp = mlflow.pyfunc.load_model("models:/bassman-wavenet@champion")
    out = amp.predict(di, params={"volume": 0.8, "treble": 0.6, "bass": 0.5, "middle": 0.5})

Input: 1-D float32 DI at the model's sample rate (an np.float32 array or {"audio": array}; over
HTTP {"inputs": [...]}); knobs as params, each a position in config.json's range (0..1). A
conditioned model needs all knobs (no silent default); a model trained at fixed knobs has none.
Output: float32, same length. Inference is the package's `streaming.render`, the path `ampstudy render` uses: block by
block from silence, with its own stream state per call (MLflow's scoring server predicts in threads).
Inputs are checked by the rules every ampstudy entry point applies (input_rules.py, shipped beside
the WaveNet code): knobs in range, audio finite and within full scale, at most
MAX_REQUEST_SECONDS of audio per call (a long file: `ampstudy render` streams any length).
Loading checks config.json before allocating and reads the weights with weights_only=True (the
package's loading.py); every refusal is one line naming the field or file (HTTP 400 when served).

Torch threads: loading sets torch to model_config "threads" (default 1: one block after another is
latency-bound, and on a busy machine more threads made streaming many times slower:
benchmarks/results/inference_threads.md); 0 leaves
torch's setting alone: mlflow.pyfunc.load_model(uri, model_config={"threads": 0}).
"""

from __future__ import annotations

import importlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

MODEL_FORMAT = 1  # config.json "format" this code reads (training.model_io.MODEL_FORMAT)
BLOCK_SIZE = 4096  # samples per streaming block: bounds memory for long inputs, same output as any size


def _refuse(message: str) -> MlflowException:
    return MlflowException.invalid_parameter_value(message)  # HTTP 400 with this message when served


class AmpModel(PythonModel):
    # The input is checked here (input_rules) against the explicit signature, not by type hints: this
    # tells MLflow not to wrap predict for type-hint validation, which would only warn, in every
    # process that defines this class (each trial, each load), that predict has no type hints.
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        # The shipped copy of ampmodel/, in the model's code/ folder (MLflow puts it on sys.path).
        package = context.model_config["wavenet_package"]
        ModelConfigError = importlib.import_module(f"{package}.config").ModelConfigError
        loading = importlib.import_module(f"{package}.loading")
        streaming = importlib.import_module(f"{package}.streaming")
        self.rules = importlib.import_module(f"{package}.input_rules")
        threads = int(context.model_config.get("threads", 1))
        if threads > 0:
            torch.set_num_threads(threads)

        directory = Path(context.artifacts["model_dir"])
        meta = _read_meta(directory / "config.json")
        try:
            net = loading.wavenet_from_files(meta["run_config"]["model"], directory / "state_dict.pt")
        except ModelConfigError as err:  # before anything was allocated
            raise _refuse(f"{directory / 'config.json'}: run_config.model.{err}") from None
        except loading.ModelFileError as err:
            raise _refuse(str(err)) from None
        self.render = streaming.render
        self.net = net
        self.conditioned = net.conditioned
        self.knobs = meta["knobs"]
        if self.conditioned and len(self.knobs) != net.num_controls:
            raise _refuse(f"config.json: knobs lists {len(self.knobs)} knobs, the model takes {net.num_controls}")
        self.sample_rate = meta["data"].get("sample_rate")
        self.trained_settings = self.rules.trained_settings(meta["run_config"], meta["data"])
        self.max_request_seconds = float(context.model_config.get("max_request_seconds",
                                                                  self.rules.MAX_REQUEST_SECONDS))

    # model_input stays unannotated: MLflow would read a type hint there as an input schema.
    def predict(self, context, model_input, params=None):
        try:
            audio, controls = self._audio(model_input), self._controls(params or {})
        except self.rules.InputRejected as err:
            raise _refuse(str(err)) from None
        # The net, not a stream kept between calls: render starts a stream of its own for this call.
        return self.render(self.net, audio, controls, block_size=BLOCK_SIZE)

    def _controls(self, params: dict[str, Any]) -> list[float] | None:
        """Knob positions in model order, each checked by the rule every entry point applies."""
        if not self.conditioned:
            return None  # its signature has no params: MLflow drops any given, with a warning
        given = {name: params[name] for name in self.knobs if params.get(name) is not None}
        missing = [name for name in self.knobs if name not in given]
        if missing:
            ranges = ", ".join(f"{k} {lo:g}..{hi:g}" for k, (lo, hi) in self.knobs.items())
            raise _refuse(f"this model follows the amp's knobs: give params {missing} (positions: {ranges})")
        positions = {name: self.rules.knob_position(name, given[name], lo, hi) for name, (lo, hi) in self.knobs.items()}
        untrained = self.rules.untrained_setting(positions, self.trained_settings)
        if untrained:  # answered (a served model has no flag to pass), and said in the server's log
            logging.getLogger("ampstudy.registered_model").warning(untrained)
        return list(positions.values())

    def _audio(self, model_input: Any) -> np.ndarray:
        """The 1-D float32 signal: MLflow hands over {'audio': array} (the signature's named input)."""
        if isinstance(model_input, dict):
            if "audio" not in model_input:
                raise _refuse(f"the input needs 'audio' (1-D float32 samples), got {sorted(model_input)}")
            model_input = model_input["audio"]
        try:
            audio = np.asarray(model_input, dtype=np.float32)
        except (TypeError, ValueError):
            raise _refuse("audio must be numbers: a 1-D array of samples") from None
        if audio.ndim != 1 or audio.size == 0:
            raise _refuse(f"audio must be a non-empty 1-D float array, got shape {audio.shape}")
        self.rules.request_length(audio.size, self.sample_rate or 48_000, self.max_request_seconds)
        finite = np.isfinite(audio)
        peak = float(np.abs(audio[finite]).max()) if finite.any() else 0.0
        self.rules.audio_levels("audio", peak, int(audio.size - np.count_nonzero(finite)))
        return np.ascontiguousarray(audio)


def _read_meta(path: Path) -> dict[str, Any]:
    """config.json with the keys this file reads, each of the right kind, or a one-line refusal."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _refuse(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        raise _refuse(f"{path}: not an ampstudy model config of format {MODEL_FORMAT}")
    for key in ("run_config", "data", "knobs"):
        if not isinstance(meta.get(key), dict):
            raise _refuse(f"{path}: '{key}' must be a table")
    if not isinstance(meta["run_config"].get("model"), dict):
        raise _refuse(f"{path}: 'run_config.model' must be a table")
    for name, bounds in meta["knobs"].items():
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(_finite(b) for b in bounds)
                and bounds[0] < bounds[1]):
            raise _refuse(f"{path}: knobs.{name}: expected [lowest, highest], got {bounds!r}")
    return meta


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


mlflow.models.set_model(AmpModel())
