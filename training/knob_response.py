"""The knob-response figure of a run: does the model's output move with each knob as the amp's does?

For each knob swept over its range with the others at 0.5 (the dataset's response sweep: one
short clip through SPICE at every position, never trained on), the output level (RMS, dB) and
the spectral centroid of the SPICE target and of the model's render of the same clip.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

from ampmodel.wavenet import WaveNetBase
from ampmodel.streaming import render
from datamodules.bassman import BassmanDataModule
from foundation.knobs import KNOB_NAMES


def level_db(y: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(y, dtype=np.float64)) + 1e-20))


def spectral_centroid(y: np.ndarray, fs: int) -> float:
    power = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / fs)
    return float((freqs * power).sum() / max(power.sum(), 1e-30))


def sweeps(datamodule: BassmanDataModule) -> dict[str, list[int]]:
    """Knob name -> response-setting indices along its sweep (others at 0.5), by position."""
    response = datamodule.settings_in("response")
    settings = datamodule.settings
    found = {}
    for knob in KNOB_NAMES:
        others = [k for k in KNOB_NAMES if k != knob]
        points = [i for i in response if all(getattr(settings[i], k) == 0.5 for k in others)]
        found[knob] = sorted(points, key=lambda i: getattr(settings[i], knob))
    return found


def response_rows(net: WaveNetBase, datamodule: BassmanDataModule) -> list[dict[str, float | str]]:
    """One row per (knob, position): SPICE and model level (dB) and spectral centroid (Hz)."""
    fs = datamodule.sample_rate
    rows = []
    for knob, points in sweeps(datamodule).items():
        for i in points:
            x = datamodule.data.inputs[datamodule.data.input_of[i]]
            target = datamodule.data.targets[i]
            pred = render(net, x, datamodule.settings[i].as_tuple())
            rows.append({"knob": knob, "position": getattr(datamodule.settings[i], knob), "setting": i,
                         "spice_level_db": level_db(target), "model_level_db": level_db(pred),
                         "spice_centroid_hz": spectral_centroid(target, fs),
                         "model_centroid_hz": spectral_centroid(pred, fs)})
    return rows


def response_figure(rows: list[dict]) -> Figure:
    fig = Figure(figsize=(14, 6), layout="constrained")
    axes = fig.subplots(2, len(KNOB_NAMES), sharey="row")
    for column, knob in enumerate(KNOB_NAMES):
        points = [r for r in rows if r["knob"] == knob]
        positions = [r["position"] for r in points]
        for row, (what, unit) in enumerate((("level_db", "output level (dB re target scale)"),
                                            ("centroid_hz", "spectral centroid (Hz)"))):
            ax = axes[row, column]
            ax.plot(positions, [r[f"spice_{what}"] for r in points], "o-", label="SPICE")
            ax.plot(positions, [r[f"model_{what}"] for r in points], "s--", label="model")
            ax.set(xlabel=f"{knob} position (others at 0.5)", xlim=(0, 1))
            if column == 0:
                ax.set_ylabel(unit)
            if row == 0:
                ax.set_title(knob)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Knob response on a clip no run trained on: SPICE vs model")
    return fig


def log_knob_response(client: MlflowClient, run_id: str, net: WaveNetBase, datamodule: BassmanDataModule) -> None:
    """Figure + CSV under knobs/ (nothing when the dataset has no response sweep)."""
    if not datamodule.settings_in("response"):
        return
    rows = response_rows(net, datamodule)
    with tempfile.TemporaryDirectory() as tmp:
        columns = list(rows[0])
        lines = [",".join(columns)] + [",".join(str(r[c]) for c in columns) for r in rows]
        (Path(tmp) / "knob_response.csv").write_text("\n".join(lines) + "\n")
        response_figure(rows).savefig(Path(tmp) / "knob_response.png", dpi=80)
        client.log_artifacts(run_id, tmp, "knobs")
    worst = max(abs(r["model_level_db"] - r["spice_level_db"]) for r in rows)
    client.log_metric(run_id, "knob_response_worst_level_error_db", worst)
