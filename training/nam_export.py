"""`ampstudy export`: a trained NAM-family model at one knob setting, as a .nam file for NAM's plugin.

The knobs are folded into fixed weights (`at_setting`), so the file holds a plain NAM WaveNet
(`version`, `architecture`, `config`, `weights`, `sample_rate`, `metadata`) in the .nam format
`nam_format` names: "0.7" (the default), what neural-amp-modeler 0.13 writes and NAM plugins on
NeuralAmpModelerCore >= 0.4.1 read, or "0.5", what 0.12 wrote and every plugin reads (the weights
are the same; only the config's layout differs). tests/test_nam_export.py loads each with the
neural-amp-modeler that writes it (0.13.0; 0.12.3) and compares what it plays with our render.

Metadata. NAM's own fields: `date`, `name`, `modeled_by` "ampstudy", the gear, `input_level_dbu` /
`output_level_dbu` when the model's data records its volts per full scale, and `loudness` / `gain`,
which NAM's exporter computes for every model and NAM's plugin needs for its normalised output
(without `loudness` it turns normalisation off, so exports at two knob settings play at their raw,
very different levels). Both are computed here as neural-amp-modeler computes them (0.12.3 and
0.13.0, nam/models/base.py `_metadata_loudness` / `_metadata_gain`), on NAM's standard test
signal and through our render at the exported knob setting (`loudness_and_gain`). NAM writes the
fields it does not define (its trainer's `training`) as further keys of the same `metadata` object
(`Exportable.export(other_metadata=...)`); plugins read only the keys they know. Ours, there:
`knobs` (the setting the file plays), `knob_conditioning`, `ampstudy_version`, `source`,
`test_esr_at_knobs` (the test-split ESR at exactly this knob setting, when the model's MLflow run
logged the per-setting test table and it has this setting) and `test_esr_overall` (the model's
test ESR over all its scored settings, `training.evaluate.PRIMARY`, when MLflow knows it). Fields
without a value are absent, never null: plugins read numbers they find.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import math
import re
import tempfile
import wave
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ampmodel.config import EXPORTABLE_FAMILIES, NAM_FILE_FORMATS
from ampmodel.streaming import render
from foundation import __version__
from foundation.errors import AmpStudyError
from foundation.files import write_with
from foundation.knobs import KNOB_NAMES
from training.evaluate import PRIMARY
from training.model_io import LoadedModel, resolve_model
from training.render import control_vector, knobs_trained

SUFFIX = ".nam"
DBU_VOLTS = 0.7746  # 0 dBu, RMS volts
# NAM's standard loudness input, a file in the neural-amp-modeler package (1 s of noise, 48 kHz, 24-bit
# mono); it is a recording, not something NAM generates, so it is read from there (without importing nam).
NAM_LOUDNESS_WAV = ("models", "_resources", "loudness_input.wav")
GAIN_LEVELS = 11  # NAM's gain: the test signal at input levels 0, 0.1, ..., 1
TEST_TABLE = "settings/test_esr_by_setting.csv"  # training/artifacts.log_settings_table(..., "test")
SAME_KNOB = 1e-6  # a knob position in the test table is the exported one within this


@dataclass(frozen=True)
class Exported:
    path: Path
    name: str
    knobs: dict[str, float]  # {} for a model trained at fixed knobs
    test_esr: float | None  # the model's overall test ESR (metadata `test_esr_overall`)
    weights: int
    test_esr_at_knobs: float | None = None
    loudness: float | None = None  # dB; None (and no `loudness`/`gain` in the file) without NAM's test signal
    gain: float | None = None


def export_nam(model_spec: str, out_path: str | Path, knobs: dict[str, float | None],
               name: str | None = None, allow_untrained_knobs: bool = False, nam_format: str = "0.7") -> Exported:
    """Write `model_spec` (model dir, runs:/..., models:/name@alias) at `knobs` to `out_path` in .nam
    format `nam_format` ("0.7" or "0.5"); a knob setting the model was not trained at is refused
    unless `allow_untrained_knobs`."""
    if nam_format not in NAM_FILE_FORMATS:
        raise AmpStudyError(f"--nam-format {nam_format}: choose one of {', '.join(NAM_FILE_FORMATS)}")
    out = checked_output_path(out_path)
    loaded = resolve_model(model_spec)
    family = loaded.run_config.model.family
    if family not in EXPORTABLE_FAMILIES:
        raise AmpStudyError(f"{model_spec}: a '{family}'-family WaveNet cannot be written as a .nam file; the "
                            f"families that export are: {', '.join(EXPORTABLE_FAMILIES)} (train with model.family "
                            "= \"nam\", e.g. preset = \"nam-standard\", or a study with exportable_only = true)")
    controls = control_vector(loaded, knobs, allow_untrained_knobs)  # the one knob check
    net = loaded.net if controls is None else loaded.net.at_setting(controls)
    try:
        config = net.nam_config(nam_format)
    except ValueError as err:  # a format that cannot hold the net (0.5 and NAM's A2)
        raise AmpStudyError(f"--nam-format {nam_format}: {str(err).removeprefix('file_format: ')}") from None
    setting = {} if controls is None else {k: float(knobs[k]) for k in KNOB_NAMES}  # as given, not float32
    title = name or out.stem
    meta = metadata(loaded, title, setting, model_spec)
    overall, at_knobs = known_test_esrs(model_spec, meta["knobs"])
    meta.update(finite_fields(test_esr_at_knobs=at_knobs, test_esr_overall=overall))
    signal = loudness_signal()
    if signal is None:
        logging.getLogger("ampstudy").warning(
            f"{out.name}: no 'loudness'/'gain' metadata (neural-amp-modeler's standard test signal "
            f"{'/'.join(('nam',) + NAM_LOUDNESS_WAV)} was not found; `make nam` installs it), so NAM's plugin "
            "cannot normalise this file's output level")
    else:
        loudness, gain = loudness_and_gain(net, signal)
        meta.update(finite_fields(loudness=loudness, gain=gain))
    document = {"version": NAM_FILE_FORMATS[nam_format], "architecture": "WaveNet", "config": config,
                "weights": net.nam_weights(), "sample_rate": loaded.sample_rate, "metadata": meta}
    write_with(out, lambda tmp: tmp.write_text(json.dumps(document)))
    return Exported(out, title, setting, overall, len(document["weights"]), at_knobs,
                    meta.get("loudness"), meta.get("gain"))


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


def metadata(loaded: LoadedModel, name: str, knobs: dict[str, float], source: str) -> dict[str, Any]:
    """NAM's user metadata fields (those it knows nothing of are absent, never null: plugins read
    numbers they find) plus what ampstudy knows: the knob setting, version, source. `export_nam`
    adds the test ESRs and NAM's loudness and gain."""
    now = datetime.now()
    cfg = loaded.run_config.model
    meta: dict[str, Any] = {
        "date": {"year": now.year, "month": now.month, "day": now.day, "hour": now.hour, "minute": now.minute,
                 "second": now.second},
        "name": name, "modeled_by": "ampstudy", "gear_type": "preamp", "gear_make": "Fender",
        "gear_model": "Bassman 5F6-A preamp (ngspice simulation)",
        "knobs": knobs or first_training_setting(loaded), "knob_conditioning": cfg.conditioning,
        "knobs_trained": knobs_trained(loaded),
        "ampstudy_version": __version__, "source": source,
    }
    for key, volts in (("input_level_dbu", loaded.data_info.get("input_full_scale_volts")),
                       ("output_level_dbu", loaded.data_info.get("target_scale_volts"))):
        if isinstance(volts, (int, float)) and math.isfinite(volts) and volts > 0:
            meta[key] = round(20 * math.log10(volts / math.sqrt(2) / DBU_VOLTS), 2)  # RMS of a full-scale sine
    return meta


def finite_fields(**values: float | None) -> dict[str, float]:
    """The given values that are finite numbers, as floats (a .nam file holds no null, NaN or inf)."""
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}


def loudness_and_gain(net: Any, signal: np.ndarray) -> tuple[float, float]:
    """NAM's `loudness` and `gain` of `net` (a WaveNet at the exported setting), as neural-amp-modeler
    computes them (nam/models/base.py, `_metadata_loudness`, `_metadata_gain`):

    - each output is the model's answer to `signal` scaled by an input level, started from silence
      (NAM runs its model with pad_start: receptive field - 1 zeros first; our render starts from the
      same silent state), whatever the model's sample rate (NAM does not resample its test signal);
    - loudness = the output's RMS in dB (20 log10) at input level 1;
    - gain: from the output RMS at the input levels 0, 0.1, ..., 1, gain = 2 mean(RMS) / RMS(1) - 1,
      clipped to 0..1: 0 when the RMS grows in proportion to the level (its mean is half of RMS(1):
      NAM's "triangle", no compression), 1 when it is RMS(1) at every level (NAM's "square", full
      compression). Algebraically NAM's (sum - triangle) / (square - triangle), square = 11 RMS(1).

    Either may be inf or NaN (a silent model); `export_nam` then leaves it out."""
    levels = np.linspace(0.0, 1.0, GAIN_LEVELS)
    rms = np.array([math.sqrt(np.mean(np.square(render(net, signal * np.float32(level), block_size=len(signal)),
                                                dtype=np.float64))) for level in levels])
    full = rms[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        loudness = 20.0 * np.log10(full)
        gain = np.clip(2.0 * rms.mean() / full - 1.0, 0.0, 1.0)
    return float(loudness), float(gain)


def loudness_signal() -> np.ndarray | None:
    """NAM's standard loudness test signal as float32 samples in -1..1, read as NAM reads it (PCM
    integer / 2^(bits - 1)); None when neural-amp-modeler (or a readable copy of the file) is absent."""
    path = nam_loudness_wav()
    if path is None:
        return None
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, frames = wav.getnchannels(), wav.getsampwidth(), wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error):
        return None
    if channels != 1 or width not in (2, 3, 4) or not frames or len(frames) % width:
        return None
    raw = np.frombuffer(frames, dtype=np.uint8).reshape(-1, width)
    padded = np.zeros((len(raw), 4), dtype=np.uint8)
    padded[:, 4 - width:] = raw  # little-endian: the sample's bytes become the top bytes of an int32
    ints = padded.view("<i4")[:, 0] >> (8 * (4 - width))  # the arithmetic shift keeps the sign
    return (ints / 2.0 ** (8 * width - 1)).astype(np.float32)


def nam_loudness_wav() -> Path | None:
    """Where the installed neural-amp-modeler keeps its loudness test signal (found, not imported)."""
    try:
        spec = importlib.util.find_spec("nam")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder).joinpath(*NAM_LOUDNESS_WAV)
        if path.is_file():
            return path
    return None


def first_training_setting(loaded: LoadedModel) -> dict[str, float]:
    """The first knob setting the model was trained at: all of them, for a model without knob conditioning."""
    settings = [s for s in loaded.data_info.get("settings") or [] if s.get("group", "train") == "train"]
    return {k: float(settings[0][k]) for k in KNOB_NAMES if k in settings[0]} if settings else {}


def known_test_esrs(model_spec: str, knobs: dict[str, float]) -> tuple[float | None, float | None]:
    """(overall, at `knobs`): the model's test ESR MLflow holds (a registered version's tag, or its run's
    metric) and its test ESR at `knobs` from its run's per-setting test table (logged by `ampstudy
    train` when it evaluates the test split). None for what is not known, e.g. a model directory."""
    registered = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))/?", model_spec)
    run = re.fullmatch(r"runs:/([0-9a-f]+)/.*", model_spec)
    if not (registered or run):
        return None, None
    from training.tracking import client

    try:
        mlflow_client = client()
        if run:
            run_id = run.group(1)
            value = mlflow_client.get_run(run_id).data.metrics.get(f"test_{PRIMARY}")
        else:
            name, alias, version = registered.groups()
            found = (mlflow_client.get_model_version_by_alias(name, alias) if alias
                     else mlflow_client.get_model_version(name, version))
            value = found.tags.get(f"test_{PRIMARY}")
            run_id = found.run_id or found.tags.get("mlflow_run_id")
        value = None if value is None else float(value)
    except Exception:  # unknown is an answer here: the export itself succeeded
        return None, None
    overall = value if value is not None and math.isfinite(value) else None
    return overall, (setting_test_esr(mlflow_client, run_id, knobs) if run_id and knobs else None)


def setting_test_esr(mlflow_client: Any, run_id: str, knobs: dict[str, float]) -> float | None:
    """The test ESR at `knobs` in the run's per-setting test table; None without one or without that row."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            table = Path(mlflow_client.download_artifacts(run_id, TEST_TABLE, tmp))
            with table.open(newline="") as lines:
                for row in csv.DictReader(lines):
                    if all(abs(float(row[k]) - knobs[k]) <= SAME_KNOB for k in KNOB_NAMES):
                        value = float(row["test_esr"])
                        return value if math.isfinite(value) else None
    except Exception:  # no table (a study trial's run, an older run), or not one we can read
        return None
    return None


def export_command(model_uri: str, loaded: LoadedModel, out_name: str) -> str | None:
    """The `ampstudy export` line for a model, at its first training setting; None if it cannot export."""
    if loaded.run_config.model.family not in EXPORTABLE_FAMILIES:
        return None
    knobs = ""
    if loaded.conditioned:
        first = first_training_setting(loaded) or dict.fromkeys(KNOB_NAMES, 0.5)
        knobs = " " + " ".join(f"--{k} {first.get(k, 0.5):g}" for k in KNOB_NAMES)
    return f"ampstudy export {model_uri} {out_name}{SUFFIX}{knobs}"
