"""What a model accepts as input, checked the same way on every path that feeds one.

The rules: a knob position is a finite number within its range (0..1 for the amp's knobs); audio
is finite and within full scale (+-1.0, which is the input volts the model was trained at); one
request to the registered model holds at most `MAX_REQUEST_SECONDS` of audio. And a knob setting
is one the model was trained on, or near one: a model trained on a knob design (settings spread
over the whole knob space) or a grid covers every setting; one trained at a few listed settings
only knows those (`untrained_setting`), and elsewhere its output is an extrapolation nobody
measured: the CLI refuses such a setting unless told `--allow-untrained-knobs`, the registered
model answers and logs a warning. Every entry point
calls these functions: configs and the CLI (`foundation.knobs.check_knob`), the level checks of a
wav (`datamodules.audio_io`), `ampstudy render`, and the registered model (pyfunc and
`mlflow models serve`). So that the registered model can apply them without ampstudy installed,
this file imports only the standard library and is shipped beside the model's code
(`training.mlflow_model.ship_ampmodel`).
"""

from __future__ import annotations

import math
from typing import Any

FULL_SCALE = 1.0  # peak sample value: the input volts of training (DataConfig.input_full_scale_volts)
MAX_REQUEST_SECONDS = 60.0  # audio per request to the registered model; longer files: `ampstudy render` streams
KNOB_TOLERANCE = 0.05  # a setting this close to a trained one on every knob counts as trained (half a dial number)


class InputRejected(ValueError):
    """An input a model does not accept; the message names the input and the fix."""


def knob_position(name: str, value: Any, low: float = 0.0, high: float = 1.0) -> float:
    """`value` as a float if it is a finite number within low..high, else InputRejected naming the knob."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise InputRejected(f"{name}: knob position {value!r} is outside {low:g}..{high:g} "
                            "(0 = fully counter-clockwise, 1 = fully clockwise; divide dial numbers 0..10 by 10)")
    return float(value)


def audio_levels(where: str, peak: float, nonfinite: int) -> None:
    """InputRejected if audio (named `where`) holds `nonfinite` NaN/inf samples or peaks over full scale."""
    if nonfinite:
        raise InputRejected(f"{where}: {nonfinite} samples are NaN or infinite; re-export the audio "
                            "(e.g. as 24-bit PCM) from the source")
    if not peak <= FULL_SCALE:
        raise InputRejected(f"{where}: peak {peak:.3f} exceeds full scale {FULL_SCALE:g} (the input level the "
                            "model was trained at); scale it into -1..1, e.g. sox in.wav out.wav gain -n -1")


def request_length(samples: int, sample_rate: float, max_seconds: float = MAX_REQUEST_SECONDS) -> None:
    """InputRejected if one request holds more than `max_seconds` of audio at `sample_rate`."""
    if samples > max_seconds * sample_rate:
        raise InputRejected(
            f"audio: {samples / sample_rate:.1f} s in one request exceeds the limit of {max_seconds:g} s "
            f"({int(max_seconds * sample_rate)} samples at {sample_rate:g} Hz); render a long file with "
            "`ampstudy render MODEL in.wav out.wav` (it streams any length), or send shorter requests "
            "(each starts from silence)")


def trained_settings(run_config: dict[str, Any], data: dict[str, Any]) -> list[dict[str, float]] | None:
    """The knob settings a model was trained at, from its config.json's `run_config` and `data`;
    None when its data covered the knob space (a knob design, or a grid of 3+ positions per knob)."""
    data_table = run_config.get("data", {})
    knobs = data_table.get("knobs", data_table)  # models saved before the config groups (2026-12): a flat table
    if knobs.get("design_settings", 0) > 0 or knobs.get("grid_points", 0) >= 3:
        return None
    return [{k: float(v) for k, v in setting.items() if k != "group" and isinstance(v, (int, float))}
            for setting in data.get("settings", []) if setting.get("group", "train") == "train"]


def coverage_text(trained: list[dict[str, float]] | None) -> str:
    """What a model's knob training covers, in words (metadata, descriptions)."""
    if trained is None:
        return "the knob space (trained on settings spread over every knob's range)"
    listed = "; ".join(_setting_text(s) for s in trained[:4]) + ("; ..." if len(trained) > 4 else "")
    return f"{len(trained)} listed knob setting(s) only: {listed}"


def untrained_setting(knobs: dict[str, float], trained: list[dict[str, float]] | None) -> str | None:
    """Why `knobs` is not a setting the model was trained at (within KNOB_TOLERANCE on every knob),
    naming the nearest trained one; None when it is, or when the training covered the knob space."""
    if not trained:
        return None

    def distance(setting: dict[str, float]) -> float:
        return max((abs(knobs[k] - setting[k]) for k in knobs if k in setting), default=0.0)

    nearest = min(trained, key=distance)
    if distance(nearest) <= KNOB_TOLERANCE:
        return None
    return (f"knobs {_setting_text(knobs)}: this model was trained at {len(trained)} listed knob setting(s) only; "
            f"the nearest is {_setting_text(nearest)}, {distance(nearest):.2f} away on one knob, so its output "
            "here is an extrapolation nobody measured")


def _setting_text(setting: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in setting.items())
