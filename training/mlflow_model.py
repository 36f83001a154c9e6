"""A trained model as an MLflow model that works without ampstudy: `log_amp_model(run_id, model_dir)`.

MLflow models-from-code: the python_model is the file training/amp_pyfunc_model.py (nothing is
cloudpickled), the WaveNet code is a copy of ampmodel/ shipped as the package
`amp_wavenet_<hash of its sources>` (the package is pure torch with relative imports, so its source
runs under another name; foundation/input_rules.py, standard library only, goes in with it; both
are copied at log time, so each stays the one source; the hash keeps models with different
WaveNet code apart when loaded in one process), and the artifact `model_dir` holds config.json
and state_dict.pt. The signature declares the audio input, the output and, for a conditioned model, the knobs as params without defaults (a missing knob is an
error, not a silent setting); their ranges are in the metadata. Any run's model can be logged, and
so registered from the UI.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import ampmodel
from ampmodel.config import WaveNetConfig
from foundation import __version__, input_rules
from foundation.knobs import knob_ranges
from training.model_io import LoadedModel, load_model, read_config

MODEL_CODE = Path(__file__).with_name("amp_pyfunc_model.py")
SHIPPED_PACKAGE = "amp_wavenet"  # prefix of the shipped package's name; it must not be `ampmodel`
EXAMPLE_SAMPLES = 512  # length of the logged input example (a decaying 110 Hz tone)


def log_amp_model(run_id: str, model_dir: str | Path, *, name: str | None = None) -> str:
    """Log the model in `model_dir` as an MLflow model of run `run_id`; returns its URI (models:/<id>).

    Uses mlflow's current tracking URI (training.tracking.client sets it). Leaves the run's status
    alone, so it may be called on a running or a finished run.
    """
    import mlflow
    import torch
    from mlflow.models import Model

    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    model_dir = Path(model_dir)
    loaded = load_model(model_dir)  # refuses a model the registry copy would refuse
    meta = read_config(model_dir)
    meta.setdefault("knobs", knob_ranges())  # model dirs saved before config.json recorded them
    requirements = [f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}",
                    f"numpy=={np.__version__}"]
    with tempfile.TemporaryDirectory(prefix="ampstudy-mlflow-model-") as tmp:
        files = Path(tmp) / "model_dir"
        files.mkdir()
        package = ship_ampmodel(Path(tmp))
        (files / "config.json").write_text(json.dumps(meta, indent=2))
        shutil.copy2(model_dir / "state_dict.pt", files / "state_dict.pt")
        # Created here, in the run's experiment: Model.log alone would file it under the active
        # (default) experiment. Like MLflow's own, it carries the run's params.
        logged = client.create_logged_model(
            run.info.experiment_id, name or model_name(loaded.run_config.model, run.info.run_name), source_run_id=run_id,
            params=dict(run.data.params), model_type="wavenet")
        info = Model.log(
            artifact_path=None, name=logged.name, flavor=mlflow.pyfunc, run_id=run_id, model_id=logged.model_id,
            python_model=str(MODEL_CODE), artifacts={"model_dir": str(files)},
            code_paths=[str(package)], model_config={"wavenet_package": package.name, "threads": 1,
                                                          "max_request_seconds": input_rules.MAX_REQUEST_SECONDS},
            signature=signature(loaded, meta["knobs"]),
            input_example=input_example(loaded), metadata=metadata(loaded, meta["knobs"]),
            pip_requirements=requirements)  # explicit: skips MLflow's slow import-capturing subprocess
    return info.model_uri


def ship_ampmodel(into: Path, source: Path = Path(ampmodel.__file__).parent) -> Path:
    """A copy of the ampmodel package under `into`, named SHIPPED_PACKAGE_<hash of its sources>,
    with foundation/input_rules.py beside its modules (the input checks every entry point applies)."""
    files = sorted(source.glob("*.py")) + [Path(input_rules.__file__)]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
    package = into / f"{SHIPPED_PACKAGE}_{digest.hexdigest()[:12]}"
    package.mkdir(parents=True)
    for file in files:
        shutil.copy2(file, package / file.name)
    return package


def model_name(cfg: WaveNetConfig, run_name: str = "") -> str:
    """What the model is and which run made it, for MLflow's model list (two trials of one
    architecture must not list as one name): e.g. knob-t012-wavenet-16ch-18layers-film."""
    family = "wavenet" if cfg.family == "paper" else f"{cfg.family}-wavenet"
    channels = "-".join(str(width) for width, _ in cfg.layer_arrays)
    return f"{run_name + '-' if run_name else ''}{family}-{channels}ch-{cfg.layers}layers-{cfg.conditioning}"


def signature(loaded: LoadedModel, knobs: dict[str, list[float]]) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    audio = Schema([TensorSpec(np.dtype(np.float32), (-1,), "audio")])
    output = Schema([TensorSpec(np.dtype(np.float32), (-1,), "amp_output")])
    params = ParamSchema([ParamSpec(k, "double", None) for k in knobs]) if loaded.conditioned else None
    return ModelSignature(inputs=audio, outputs=output, params=params)


def input_example(loaded: LoadedModel) -> Any:
    """A short DI tone, plus the first training knob setting for a conditioned model."""
    t = np.arange(EXAMPLE_SAMPLES) / loaded.sample_rate
    audio = (0.3 * np.sin(2 * np.pi * 110 * t) * np.exp(-20 * t)).astype(np.float32)
    if not loaded.conditioned:
        return audio
    first = (loaded.data_info.get("settings") or [{}])[0]
    return audio, {k: float(first.get(k, 0.5)) for k in knob_ranges()}


def metadata(loaded: LoadedModel, knobs: dict[str, list[float]]) -> dict[str, Any]:
    cfg = loaded.run_config.model
    return {"sample_rate": loaded.sample_rate, "dataset_hash": loaded.data_info.get("dataset_hash"),
            "knobs": knobs if loaded.conditioned else {}, "conditioning": cfg.conditioning,
            "receptive_field": cfg.receptive_field, "ampstudy_version": __version__,
            "input": "1-D float32 DI at sample_rate; full scale = the input volts used in training",
            "output": "float32, same length: amp output on the training targets' scale (data.target_scale_volts)"}
