"""Render a wav through a trained model with streaming (block-by-block) inference.

Everything that could stop a render is checked before any audio is processed: the output path
(not a folder, not the input itself, in an existing folder where a file can be created), the
input's format (readable, mono, the model's sample rate) and levels (a read-only pass over the
file), the knobs, the device (`--device`). Then the file is read, run through
`ampmodel.streaming.render_blocks` and written block by block, so memory stays at a few blocks
whatever the file's length; the output appears only when the whole render succeeded (a stopped
render leaves no partial file)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ampmodel.streaming import render_blocks
from datamodules.audio_io import check_wav_format, check_wav_levels, wav_blocks, wav_writer
from foundation import input_rules
from foundation.configs import to_dict
from foundation.errors import AmpStudyError, StopRequested
from foundation.files import probe_writable
from foundation.knobs import KNOB_NAMES, check_knob
from training.devices import resolve_accelerator
from training.model_io import LoadedModel, resolve_model


def control_vector(model: LoadedModel, knobs: dict[str, float | None],
                   allow_untrained: bool = False) -> np.ndarray | None:
    """Knob positions for a conditioned model; errors name the missing/out-of-range knob. A setting
    the model was not trained at (input_rules.untrained_setting) is refused, or with
    `allow_untrained` warned about."""
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
    positions = {k: check_knob(k, given[k]) for k in KNOB_NAMES}
    untrained = input_rules.untrained_setting(positions, trained_knob_settings(model))
    if untrained and not allow_untrained:
        raise AmpStudyError(f"{untrained}; choose a trained setting, or pass --allow-untrained-knobs to go on")
    if untrained:
        logging.getLogger("ampstudy").warning(untrained)
    return np.array([positions[k] for k in KNOB_NAMES], dtype=np.float32)


def trained_knob_settings(model: LoadedModel) -> list[dict[str, float]] | None:
    """The settings a conditioned model was trained at; None when it covers the knob space."""
    return input_rules.trained_settings(to_dict(model.run_config), model.data_info)


def knobs_trained(model: LoadedModel) -> str:
    """What a model's knob training covers, in words (`knobs_trained` of a .nam and of a registered version)."""
    if not model.conditioned:
        return "fixed knobs: only the setting it was trained at"
    return input_rules.coverage_text(trained_knob_settings(model))


def check_output_path(input_wav: str | Path, output_wav: str | Path) -> None:
    """The output must be a new or replaceable file, in an existing folder where this process can
    create files, that is not the input (also via a link or another spelling of the same path)."""
    source, target = Path(input_wav), Path(output_wav)
    if target.is_dir():
        raise AmpStudyError(f"{target}: is a folder; give the output file name, e.g. {target / 'amp.wav'}")
    same = target.resolve() == source.resolve()
    if not same and target.exists() and source.exists():
        same = os.path.samefile(source, target)  # hard links
    if same:
        raise AmpStudyError(f"{target}: is the input recording {source}; rendering would overwrite it, "
                            "choose another output file")
    folder = target.parent
    if not folder.is_dir():
        raise AmpStudyError(f"{target}: the folder {folder} does not exist; create it (mkdir -p {folder}) "
                            "or choose another output file")
    try:
        probe_writable(folder)
    except OSError as err:
        raise AmpStudyError(f"{target}: cannot write in {folder} ({err.strerror or err}); "
                            "choose another output file") from None


@contextlib.contextmanager
def stopped_by_signals() -> Iterator[None]:
    """SIGTERM (and SIGHUP) end the block with StopRequested, as Ctrl-C ends it with
    KeyboardInterrupt, so that what the block was writing is cleaned up (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise StopRequested(signum, f"stopped by {signal.Signals(signum).name}: nothing was written")

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def render_file(model_spec: str, input_wav: str, output_wav: str, knobs: dict[str, float | None],
                block_seconds: float = 0.1, device: str = "cpu", threads: int = 1,
                allow_untrained_knobs: bool = False) -> tuple[float, float]:
    """Returns (seconds of audio, wall seconds spent rendering). `device` "cpu" (default: a stream of
    short blocks is latency-bound, where a CPU core wins), "cuda" or "auto" (cuda when present).
    `threads`: torch CPU threads (default 1, for the same reason; 0 = torch's choice). The output
    appears complete or not at all, also when the render is stopped (Ctrl-C, SIGTERM). A knob
    setting the model was not trained at is refused unless `allow_untrained_knobs` (control_vector)."""
    if not 0 < block_seconds <= 60:
        raise AmpStudyError(f"--block-seconds {block_seconds}: must be > 0 and <= 60")
    accelerator = resolve_accelerator(device, where="--device")
    check_output_path(input_wav, output_wav)
    given_as = "the command's input_wav argument"
    rate = check_wav_format(input_wav, None, given_as=given_as).samplerate  # readable and mono, from the header
    samples = check_wav_levels(input_wav, rate, min_seconds=0.0)  # any length can be rendered
    model = resolve_model(model_spec)
    model.net.to(accelerator)  # render_blocks runs on the net's device
    # at the model's rate, or one line naming the resampling
    check_wav_format(input_wav, model.sample_rate, given_as=given_as, rate_name="the model's sample rate")
    controls = control_vector(model, knobs, allow_untrained_knobs)
    if threads > 0:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    block = max(1, int(block_seconds * rate))
    with stopped_by_signals(), wav_writer(output_wav, rate) as write:
        for out in render_blocks(model.net, wav_blocks(input_wav, rate, block), controls):
            write(out)
    return samples / rate, time.perf_counter() - started
