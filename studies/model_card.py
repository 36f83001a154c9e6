"""What a registered model version says about itself: its tags (for code) and its description (for
people, shown as Markdown on the version's page in the MLflow UI).
"""

from __future__ import annotations

import math
from typing import Any

from foundation.knobs import KNOB_NAMES
from training.evaluate import ESR_DEFINITION, ESR_DEFINITION_TAG, PRIMARY, finite_numbers
from training.model_io import LoadedModel
from training.nam_export import export_command
from training.render import knobs_trained, trained_knob_settings
from training.run_info import architecture_text


SEEN_ONLY = "the trained knob settings' unseen audio (the data holds no knob settings no trial saw)"


def version_tags(study: str, trial: Any, run_id: str, test: dict[str, Any], loaded: LoadedModel) -> dict[str, str]:
    """The tags `promote` and other tools read back: every finite test number (`test_esr_tail_aware`,
    `test_esr_geomean_floored`, `test_esr_mean_scored_settings`, `test_esr_worst_scored_setting`, ...),
    the trial's validation number, cost, dataset hash and the ESR definition."""
    return {"study": study, "trial": str(trial.number), f"val_{PRIMARY}": repr(trial.values[0]),
            "macs_per_sample": repr(trial.user_attrs.get("macs_per_sample")),
            "rtf": repr(trial.user_attrs.get("rtf")), "params": repr(trial.user_attrs.get("params")),
            "data_hash": str(loaded.data_info.get("dataset_hash", "")), "mlflow_run_id": run_id,
            "family": loaded.run_config.model.family, ESR_DEFINITION_TAG: ESR_DEFINITION,
            "test_scored_on": str(test.get("scored_on", "")),
            "knobs_trained": knobs_trained(loaded),
            **{f"test_{k}": repr(v) for k, v in finite_numbers(test).items()}}


def version_description(name: str, version: str, tags: dict[str, str], test: dict[str, Any],
                        loaded: LoadedModel) -> str:
    cfg = loaded.run_config.model
    fs = loaded.sample_rate
    settings = loaded.data_info.get("settings") or []
    groups = [s.get("group", "train") for s in settings]
    trained = trained_knob_settings(loaded)
    # The examples play a setting the model was trained at (elsewhere render refuses a listed-settings model).
    position = {k: float((trained[0] if trained else {}).get(k, 0.5)) for k in KNOB_NAMES}
    knobs = " ".join(f"--{k} {position[k]:g}" for k in KNOB_NAMES) if loaded.conditioned else ""
    params = (f", params={{{', '.join(f'{k!r}: {position[k]:g}' for k in KNOB_NAMES)}}}" if loaded.conditioned
              else "")
    conditioning = (f"follows the knobs ({', '.join(KNOB_NAMES)}: positions 0..1, {cfg.conditioning} conditioning), "
                    f"trained on {knobs_trained(loaded)}" +
                    ("" if trained is None else " (elsewhere `ampstudy render`/`export` refuse "
                     "without --allow-untrained-knobs; the served model answers and logs a warning)")
                    if loaded.conditioned else "trained at fixed knobs " + _knobs(settings[:1]))
    rows = [
        ("study, trial", f"`{tags['study']}`, trial {tags['trial']} (MLflow run `{tags['mlflow_run_id']}`)"),
        ("architecture", architecture_text(cfg, fs)),
        ("knobs", conditioning),
        ("test ESR", _test_text(test, _float(tags[f"val_{PRIMARY}"]))),
        ("compute", f"{_num(_float(tags['macs_per_sample']))} MACs/sample, real-time factor "
                    f"{_num(_float(tags['rtf']))}x (one CPU thread)"),
        ("data", f"dataset hash `{tags['data_hash']}`, {fs} Hz, {len(settings)} knob settings: "
                 f"{groups.count('train')} trained on, {groups.count('val')} for validation, "
                 f"{groups.count('test')} only for this test"),
    ]
    table = "\n".join(["| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows)])
    command = export_command(f"models:/{name}/{version}", loaded, name)
    export = f"\nPlay it in Neural Amp Modeler's plugin (one .nam file per knob setting):\n\n    {command}\n\n" \
        if command else "\n"
    return f"""SPICE Bassman 5F6-A preamp modelled by a WaveNet.

{table}

Input: mono float32 DI at {fs} Hz, full scale = the input volts used in training. Output: same
length, on the training targets' scale. ESR with pre-emphasis 0.95, lower is better; "tail-aware"
is each knob setting's ESR floored at 1e-3 and averaged in dB, raised when the worst setting is more
than 10x that.

Render a wav with ampstudy (this version, or whichever is the champion):

    ampstudy render models:/{name}/{version} di.wav amp.wav {knobs}
    ampstudy render models:/{name}@champion di.wav amp.wav {knobs}
{export}
From Python, with only mlflow, torch and numpy installed (soundfile to read wavs):

    import mlflow, soundfile as sf
    amp = mlflow.pyfunc.load_model("models:/{name}/{version}")
    di, fs = sf.read("di.wav", dtype="float32")   # mono, {fs} Hz
    out = amp.predict(di{params})

Over HTTP: `mlflow models serve -m models:/{name}/{version} --env-manager local -h 127.0.0.1 -p 5001`,
then POST `{{"inputs": [samples...]{', "params": {...knobs}' if loaded.conditioned else ''}}}` to `/invocations`.
"""


def _test_text(test: dict[str, Any], val: float) -> str:
    """The test numbers the evaluation produced, each named; one it did not produce is left out
    (a model with no unseen knob settings has no unseen-settings number), never shown as n/a."""
    over = "knob settings no trial saw" if test.get("scored_on") == "unseen" else SEEN_ONLY
    parts = [("geometric mean {} (floored at 1e-3)", test.get("esr_geomean_floored")),
             ("mean {}", test.get("esr_mean_scored_settings")), ("worst setting {}", test.get("esr_worst_scored_setting")),
             ("pooled {}", test.get("esr_pooled")),
             ("on the trained settings' unseen audio {}", test.get("esr_geomean_seen_settings") if
              test.get("scored_on") == "unseen" else None),
             ("validation ESR {}", val)]
    known = [text.format(_num(value)) for text, value in parts if _finite(value)]
    head = f"{_num(test.get(PRIMARY))} tail-aware, over {over}" if _finite(test.get(PRIMARY)) else "not measured"
    return head + (": " + ", ".join(known) if known else "")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _knobs(settings: list[dict[str, Any]]) -> str:
    return ", ".join(f"{k} {s.get(k)}" for s in settings for k in KNOB_NAMES) or "(not recorded)"


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "None") else math.nan
    except ValueError:
        return math.nan


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"
