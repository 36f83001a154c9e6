"""`ampstudy export`: a trained NAM-family model at one knob setting, as a .nam file for NAM's plugin.

The knobs are folded into fixed weights (`at_setting`), so the file holds a plain NAM WaveNet in
the .nam format 0.5 (`version`, `architecture`, `config`, `weights`, `sample_rate`, `metadata`),
which every NAM plugin and neural-amp-modeler's own loader read (tests/test_nam_export.py loads
it with the latter and compares with our render). Metadata: name, modeled_by "ampstudy", the
gear, the knob setting, the test ESR when the model's MLflow run or registered version knows it,
and the input/output levels in dBu when the model's data records its volts per full scale.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ampmodel.config import EXPORTABLE_FAMILIES
from foundation import __version__
from foundation.errors import AmpStudyError
from foundation.files import write_with
from foundation.knobs import KNOB_NAMES
from training.evaluate import PRIMARY
from training.model_io import LoadedModel, resolve_model
from training.render import control_vector

NAM_FILE_VERSION = "0.5.4"  # the .nam schema neural-amp-modeler 0.12 writes; NAM plugins read it
SUFFIX = ".nam"
DBU_VOLTS = 0.7746  # 0 dBu, RMS volts


@dataclass(frozen=True)
class Exported:
    path: Path
    name: str
    knobs: dict[str, float]  # {} for a model trained at fixed knobs
    test_esr: float | None
    weights: int


def export_nam(model_spec: str, out_path: str | Path, knobs: dict[str, float | None],
               name: str | None = None) -> Exported:
    """Write `model_spec` (model dir, runs:/..., models:/name@alias) at `knobs` to `out_path`."""
    out = checked_output_path(out_path)
    loaded = resolve_model(model_spec)
    family = loaded.run_config.model.family
    if family not in EXPORTABLE_FAMILIES:
        raise AmpStudyError(f"{model_spec}: a '{family}'-family WaveNet cannot be written as a .nam file; the "
                            f"families that export are: {', '.join(EXPORTABLE_FAMILIES)} (train with model.family "
                            "= \"nam\", e.g. preset = \"nam-standard\", or a study with exportable_only = true)")
    controls = control_vector(loaded, knobs)  # the one knob check: missing, NaN, outside 0..1
    net = loaded.net if controls is None else loaded.net.at_setting(controls)
    setting = {} if controls is None else {k: float(knobs[k]) for k in KNOB_NAMES}  # as given, not float32
    test_esr = known_test_esr(model_spec)
    title = name or out.stem
    document = {"version": NAM_FILE_VERSION, "architecture": "WaveNet", "config": net.nam_config(),
                "weights": net.nam_weights(), "sample_rate": loaded.sample_rate,
                "metadata": metadata(loaded, title, setting, test_esr, model_spec)}
    write_with(out, lambda tmp: tmp.write_text(json.dumps(document)))
    return Exported(out, title, setting, test_esr, len(document["weights"]))


def checked_output_path(out_path: str | Path) -> Path:
    out = Path(out_path)
    if out.suffix != SUFFIX:
        raise AmpStudyError(f"{out}: NAM's plugin opens files ending in {SUFFIX}; name the output e.g. "
                            f"{out.with_suffix(SUFFIX).name}")
    if out.is_dir():
        raise AmpStudyError(f"{out}: is a directory; give a file name ending in {SUFFIX}")
    if not out.parent.is_dir():
        raise AmpStudyError(f"{out.parent}: no such directory; create it first or write the .nam file elsewhere")
    return out


def metadata(loaded: LoadedModel, name: str, knobs: dict[str, float], test_esr: float | None,
             source: str) -> dict[str, Any]:
    """NAM's metadata fields (those it knows nothing of are absent, never null: plugins read
    numbers they find) plus what ampstudy knows: the knob setting, test ESR, version, source."""
    now = datetime.now()
    cfg = loaded.run_config.model
    meta: dict[str, Any] = {
        "date": {"year": now.year, "month": now.month, "day": now.day, "hour": now.hour, "minute": now.minute,
                 "second": now.second},
        "name": name, "modeled_by": "ampstudy", "gear_type": "preamp", "gear_make": "Fender",
        "gear_model": "Bassman 5F6-A preamp (ngspice simulation)",
        "knobs": knobs or first_training_setting(loaded), "knob_conditioning": cfg.conditioning,
        "ampstudy_version": __version__, "source": source,
    }
    for key, volts in (("input_level_dbu", loaded.data_info.get("input_full_scale_volts")),
                       ("output_level_dbu", loaded.data_info.get("target_scale_volts"))):
        if isinstance(volts, (int, float)) and math.isfinite(volts) and volts > 0:
            meta[key] = round(20 * math.log10(volts / math.sqrt(2) / DBU_VOLTS), 2)  # RMS of a full-scale sine
    if test_esr is not None:
        meta["test_esr"] = test_esr
    return meta


def first_training_setting(loaded: LoadedModel) -> dict[str, float]:
    """The first knob setting the model was trained at: all of them, for a model without knob conditioning."""
    settings = [s for s in loaded.data_info.get("settings") or [] if s.get("group", "train") == "train"]
    return {k: float(settings[0][k]) for k in KNOB_NAMES if k in settings[0]} if settings else {}


def known_test_esr(model_spec: str) -> float | None:
    """The test ESR MLflow holds for this model: a registered version's tag, or its run's metric."""
    registered = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))/?", model_spec)
    run = re.fullmatch(r"runs:/([0-9a-f]+)/.*", model_spec)
    if not (registered or run):
        return None
    from training.tracking import client

    try:
        mlflow_client = client()
        if run:
            value = mlflow_client.get_run(run.group(1)).data.metrics.get(f"test_{PRIMARY}")
        else:
            name, alias, version = registered.groups()
            found = (mlflow_client.get_model_version_by_alias(name, alias) if alias
                     else mlflow_client.get_model_version(name, version))
            value = found.tags.get(f"test_{PRIMARY}")
        value = None if value is None else float(value)
    except Exception:  # unknown is an answer here: the export itself succeeded
        return None
    return value if value is not None and math.isfinite(value) else None


def export_command(model_uri: str, loaded: LoadedModel, out_name: str) -> str | None:
    """The `ampstudy export` line for a model, at its first training setting; None if it cannot export."""
    if loaded.run_config.model.family not in EXPORTABLE_FAMILIES:
        return None
    knobs = ""
    if loaded.conditioned:
        first = first_training_setting(loaded) or dict.fromkeys(KNOB_NAMES, 0.5)
        knobs = " " + " ".join(f"--{k} {first.get(k, 0.5):g}" for k in KNOB_NAMES)
    return f"ampstudy export {model_uri} {out_name}{SUFFIX}{knobs}"
