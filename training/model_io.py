"""A trained amp model on disk: weights + the config that built them + a TorchScript copy.

Layout of a model directory (also the `model/` artifact of every MLflow run):
    config.json     {"format", "ampstudy_version", "run_config": {...}, "data": {...}, "knobs": {...}}
    state_dict.pt   torch state dict of build_wavenet(run_config.model) (the family the config names)
    model.ts        torch.jit.script(net), loadable without ampstudy
`data` records what the numbers mean: sample rate, volts per full-scale input sample, the target
scale, the dataset hash and the knob settings seen in training; `knobs` the control order and
ranges ({name: [lo, hi]}) for code that cannot import foundation.knobs (the registered model).

Loading trusts neither file (a model may come from a registry): config.json is validated, sizes
included, before the net is allocated, and weights are read with weights_only=True
(ampmodel.loading). MLflow URIs are downloaded into a temporary folder that is removed once the
model is in memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ampmodel.loading import ModelFileError, build_wavenet, load_weights
from ampmodel.wavenet import WaveNetBase
from foundation import __version__
from foundation.configs import to_dict
from foundation.errors import AmpStudyError
from foundation.files import as_created
from foundation.knobs import knob_ranges
from training.run_config import RunConfig, regrouped, run_config_from_mapping

MODEL_FORMAT = 1


@dataclass(frozen=True)
class LoadedModel:
    net: WaveNetBase
    run_config: RunConfig
    data_info: dict[str, Any]

    @property
    def sample_rate(self) -> int:
        return int(self.data_info.get("sample_rate", self.run_config.data.sample_rate))

    @property
    def conditioned(self) -> bool:
        return self.run_config.model.conditioning != "none"


def save_model(directory: str | Path, net: WaveNetBase, run_config: RunConfig, data_info: dict[str, Any]) -> Path:
    """Write the model directory atomically (temp dir + rename) and return its path."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    as_created(tmp, directory=True)  # mkdtemp makes 0700: the model folder would be private
    net = net.eval().cpu()
    meta = {"format": MODEL_FORMAT, "ampstudy_version": __version__,
            "run_config": to_dict(run_config), "data": data_info, "knobs": knob_ranges()}
    (tmp / "config.json").write_text(json.dumps(meta, indent=2))
    torch.save(net.state_dict(), tmp / "state_dict.pt")
    torch.jit.script(net).save(str(tmp / "model.ts"))
    if directory.exists():
        shutil.rmtree(directory)
    os.rename(tmp, directory)
    return directory


def load_model(directory: str | Path) -> LoadedModel:
    directory = Path(directory)
    config_path = directory / "config.json"
    meta = read_config(directory)
    if meta.get("format") != MODEL_FORMAT:
        raise AmpStudyError(f"{directory}: model format {meta.get('format')} is not {MODEL_FORMAT}; "
                            "retrain or use the ampstudy version that wrote it "
                            f"({meta.get('ampstudy_version')})")
    if not isinstance(meta.get("run_config"), dict) or not isinstance(meta.get("data", {}), dict):
        raise AmpStudyError(f"{config_path}: 'run_config' and 'data' must be tables")
    try:
        # Checks sizes before WaveNet allocates; a model saved before the config groups reads too.
        run_config = run_config_from_mapping(regrouped(meta["run_config"]))
    except AmpStudyError as err:
        raise AmpStudyError(f"{config_path}: run_config.{err}") from None
    try:
        net = load_weights(build_wavenet(run_config.model), directory / "state_dict.pt")
    except ModelFileError as err:
        raise AmpStudyError(str(err)) from None
    return LoadedModel(net, run_config, dict(meta.get("data", {})))


def read_config(directory: Path) -> dict[str, Any]:
    """config.json of a model directory as a dict; a missing or malformed file is a one-line error."""
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise AmpStudyError(f"{directory}: not an ampstudy model directory (no config.json)")
    try:
        meta = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AmpStudyError(f"{config_path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise AmpStudyError(f"{config_path}: expected a JSON object, got {type(meta).__name__}")
    return meta


def resolve_model(spec: str) -> LoadedModel:
    """Load from a local model dir, or any MLflow model/artifact URI (runs:/..., models:/name@alias)."""
    path = Path(spec)
    if path.is_dir():
        found = find_model_dir(path)
        if found is None:
            raise AmpStudyError(f"{spec}: no ampstudy model (config.json) inside this directory")
        return load_model(found)
    if "://" in spec or spec.startswith(("runs:/", "models:/")):
        # lazy: rendering a local model needs no tracking stack
        from training import tracking

        uri = tracking.default_tracking_uri(create=False)
        store = tracking.sqlite_path(uri)
        if store is not None and not store.exists() and spec.startswith(("runs:/", "models:/")):
            # Reading must not leave an empty store (mlruns/mlflow.db) wherever it was tried.
            raise AmpStudyError(f"{spec}: no MLflow store here ({store} does not exist); run this from the folder "
                                "that holds mlruns/, or set MLFLOW_TRACKING_URI to your tracking server")
        tracking.client(uri)  # points mlflow at that store (and its registry)
        with downloaded_model_dir(spec) as directory:
            return load_model(directory)  # fully in memory before the download is removed
    raise AmpStudyError(f"{spec}: no such model directory, and not an MLflow URI "
                        "(use e.g. models:/bassman-wavenet@champion or runs:/<run_id>/model)")


@contextlib.contextmanager
def downloaded_model_dir(artifact_uri: str) -> Iterator[Path]:
    """The model directory inside MLflow artifact `artifact_uri`, in a temporary folder removed on exit.

    Uses the tracking and registry URIs mlflow is currently set to (see training.tracking.client).
    """
    import mlflow

    with tempfile.TemporaryDirectory(prefix="ampstudy-model-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=tmp)
        except Exception as err:  # MLflow raises many types for a missing model/alias
            raise AmpStudyError(f"{artifact_uri}: could not fetch from MLflow ({_one_line(err)}); "
                                "check the name/alias with `mlflow ui` or `ampstudy promote`") from None
        found = find_model_dir(Path(local))
        if found is None:
            raise AmpStudyError(f"{artifact_uri}: the MLflow artifact holds no ampstudy model directory")
        yield found


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]


def find_model_dir(root: Path) -> Path | None:
    """`root` itself or the first folder below it holding config.json + state_dict.pt."""
    if (root / "config.json").is_file() and (root / "state_dict.pt").is_file():
        return root
    for candidate in sorted(root.rglob("state_dict.pt")):
        if (candidate.parent / "config.json").is_file():
            return candidate.parent
    return None
