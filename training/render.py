"""Render a wav through a trained model with streaming (block-by-block) inference."""

from __future__ import annotations

import time

import numpy as np

from ampmodel.streaming import render
from datamodules.audio_io import load_wav, save_wav
from foundation.errors import AmpStudyError
from foundation.knobs import KNOB_NAMES, check_knob
from training.model_io import LoadedModel, resolve_model


def control_vector(model: LoadedModel, knobs: dict[str, float | None]) -> np.ndarray | None:
    """Knob positions for a conditioned model; errors name the missing/out-of-range knob."""
    given = {k: v for k, v in knobs.items() if v is not None}
    if not model.conditioned:
        if given:
            trained = model.data_info.get("settings") or []
            raise AmpStudyError(
                f"this model was trained without knob conditioning (fixed knobs {trained[:1]}); "
                f"drop --{' --'.join(given)} or use a conditioned model")
        return None
    missing = [k for k in KNOB_NAMES if k not in given]
    if missing:
        raise AmpStudyError(f"this model follows the amp's knobs: give --{' --'.join(missing)} (positions 0..1)")
    return np.array([check_knob(k, given[k]) for k in KNOB_NAMES], dtype=np.float32)


def render_file(model_spec: str, input_wav: str, output_wav: str, knobs: dict[str, float | None],
                block_seconds: float = 0.1) -> tuple[float, float]:
    """Returns (seconds of audio, wall seconds spent rendering)."""
    model = resolve_model(model_spec)
    controls = control_vector(model, knobs)
    audio = load_wav(input_wav, model.sample_rate, min_seconds=0.0)  # any length can be rendered
    if block_seconds <= 0:
        raise AmpStudyError(f"--block-seconds {block_seconds}: must be > 0")
    started = time.perf_counter()
    out = render(model.net, audio, controls, block_size=max(1, int(block_seconds * model.sample_rate)))
    wall = time.perf_counter() - started
    save_wav(output_wav, out, model.sample_rate)
    return len(audio) / model.sample_rate, wall
