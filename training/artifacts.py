"""Listenable and visible evidence for a run: wav examples and spectrogram/error plots in MLflow.

The MLflow UI plays .wav artifacts, so every run carries, per logged knob setting, the amp input,
the SPICE target and the model's prediction of the same few seconds of validation audio.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from matplotlib.figure import Figure  # Figure without pyplot: no global backend state
from mlflow.tracking import MlflowClient

from ampmodel.wavenet import WaveNetBase
from ampmodel.losses import REPORTED_PRE_EMPHASIS, esr
from ampmodel.streaming import render

GROUP_COLOURS = {"train": "tab:blue", "val": "tab:orange", "test": "tab:red"}


def comparison_figure(input_: np.ndarray, target: np.ndarray, pred: np.ndarray, fs: int, title: str) -> Figure:
    """Waveforms, error envelope, spectrograms and long-term spectra of target vs prediction."""
    error = target - pred
    fig = Figure(figsize=(12, 10), layout="constrained")
    axes = fig.subplots(3, 2)
    t = np.arange(len(target)) / fs
    peak = int(np.argmax(np.abs(target)))
    zoom = slice(max(0, peak - fs // 200), min(len(target), peak + fs // 50))
    ax = axes[0, 0]
    ax.plot(t[zoom] * 1000, target[zoom], label="SPICE target", lw=1.2)
    ax.plot(t[zoom] * 1000, pred[zoom], "--", label="prediction", lw=1.0)
    ax.plot(t[zoom] * 1000, input_[zoom] * np.max(np.abs(target)) / max(np.max(np.abs(input_)), 1e-9),
            ":", label="input (scaled)", lw=0.8, alpha=0.7)
    ax.set(xlabel="time (ms)", ylabel="amplitude (1 = training targets' peak)", title="waveform around the loudest peak")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    hop = max(1, fs // 100)
    frames = len(target) // hop
    def envelope(x: np.ndarray) -> np.ndarray:
        return 10 * np.log10(np.mean(x[: frames * hop].reshape(frames, hop) ** 2, axis=1) + 1e-12)
    ax.plot(np.arange(frames) * hop / fs, envelope(target), label="target level")
    ax.plot(np.arange(frames) * hop / fs, envelope(error), label="error level")
    ax.set(xlabel="time (s)", ylabel="dB", title="level of target vs error (10 ms frames)")
    ax.legend(fontsize=8)
    for ax, signal, name in ((axes[1, 0], target, "SPICE target"), (axes[1, 1], pred, "prediction"),
                             (axes[2, 0], error, "error")):
        with np.errstate(divide="ignore"):  # digital silence has -inf dB; the colour floor hides it
            *_, image = ax.specgram(signal, NFFT=1024, Fs=fs, noverlap=768, cmap="magma", vmin=-120)
        fig.colorbar(image, ax=ax, label="dB")
        ax.set(ylim=(0, min(fs / 2, 12000)), xlabel="time (s)", ylabel="Hz", title=f"{name} spectrogram")
    ax = axes[2, 1]
    for signal, name in ((target, "target"), (pred, "prediction"), (error, "error")):
        spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal)))) + 1e-12
        freqs = np.fft.rfftfreq(len(signal), 1 / fs)
        ax.semilogx(freqs[1:], 20 * np.log10(spectrum[1:]), lw=0.7, label=name)
    ax.set(xlim=(20, fs / 2), xlabel="Hz", ylabel="dB", title="long-term spectrum")
    ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig


def log_examples(client: MlflowClient, run_id: str, net: WaveNetBase, datamodule, settings: list[int],
                 seconds: float, split: str = "val") -> list[float]:
    """For each knob setting: input/target/prediction wavs under audio/, a figure under plots/.
    Returns each clip's length in seconds: up to `seconds`, less where the split's longest
    contiguous stretch of that setting is shorter."""
    if seconds <= 0:
        return []
    lengths = []
    fs = datamodule.sample_rate
    context = net.receptive_field - 1
    with tempfile.TemporaryDirectory() as tmp:
        for setting in settings:
            x, target, controls = datamodule.example(split, setting, seconds)
            pred = render(net, x, controls)[context:]  # the one whole-signal inference path
            input_ = x[context:]
            lengths.append(len(input_) / fs)
            seen = "unseen" if datamodule.groups[setting] != "train" else "seen"
            label = datamodule.settings[setting].label()
            folder = Path(tmp) / "audio" / f"setting_{setting}_{seen}_{label}"
            folder.mkdir(parents=True)
            for name, signal in (("input", input_), ("target", target), ("prediction", pred)):
                sf.write(folder / f"{name}.wav", np.asarray(signal, dtype=np.float32), fs, subtype="FLOAT")
            plots = Path(tmp) / "plots"
            plots.mkdir(exist_ok=True)
            value = float(esr(torch.from_numpy(pred), torch.from_numpy(target)))
            fig = comparison_figure(input_, target, pred, fs, f"{split} audio, {seen} knobs {label}, "
                                                              f"ESR {value:.4f} (pre-emphasis {REPORTED_PRE_EMPHASIS})")
            fig.savefig(plots / f"{split}_setting_{setting}.png", dpi=80)
        client.log_artifacts(run_id, str(Path(tmp) / "audio"), "audio")
        client.log_artifacts(run_id, str(Path(tmp) / "plots"), "plots")
    return lengths


def log_settings_table(client: MlflowClient, run_id: str, rows: list[dict], split: str) -> None:
    """ESR per knob setting: a CSV table and a figure (bars per setting, ESR over volume x treble)."""
    if not rows:
        return
    key = f"{split}_esr"
    with tempfile.TemporaryDirectory() as tmp:
        columns = list(rows[0])
        lines = [",".join(columns)] + [",".join(str(row[c]) for c in columns) for row in rows]
        (Path(tmp) / f"{split}_esr_by_setting.csv").write_text("\n".join(lines) + "\n")
        fig = Figure(figsize=(12, 4.5), layout="constrained")
        bars, grid = fig.subplots(1, 2)
        labels = [f"{r['setting']}: v{r['volume']:.2f} t{r['treble']:.2f} b{r['bass']:.2f} m{r['middle']:.2f}"
                  for r in rows]
        colours = [GROUP_COLOURS.get(r["group"], "tab:gray") for r in rows]
        bars.barh(labels, [r[key] for r in rows], color=colours)
        bars.set(xlabel=f"{split} ESR (pre-emphasis {REPORTED_PRE_EMPHASIS})",
                 title="ESR by knob setting (blue: trained on; orange: validation; red: test settings)")
        bars.tick_params(axis="y", labelsize=7)
        points = grid.scatter([r["volume"] for r in rows], [r["treble"] for r in rows], c=[r[key] for r in rows],
                              s=[60 + 40 * r["bass"] for r in rows], cmap="viridis",
                              edgecolors=colours, linewidths=1.5)
        fig.colorbar(points, ax=grid, label=f"{split} ESR")
        grid.set(xlabel="volume", ylabel="treble", xlim=(-0.05, 1.05), ylim=(-0.05, 1.05),
                 title="ESR over the knob settings (size: bass)")
        fig.savefig(Path(tmp) / f"{split}_esr_by_setting.png", dpi=80)
        client.log_artifacts(run_id, tmp, "settings")
