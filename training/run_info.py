"""What a training run tells MLflow besides its results, so that a person browsing it understands it.

- `run_tags`: who ran it, from which command and git commit (MLflow's own context providers:
  `mlflow.user`, `mlflow.source.*`, `mlflow.source.git.commit`) and a description
  (`mlflow.note.content`, Markdown shown on the run page) naming the model and the data.
- `log_dataset`: the SPICE dataset as an MLflow dataset input (name, content hash as digest,
  folder as source, columns as schema, settings and seconds as profile), so a registered
  version links to its run and the run to the data it was trained on.
- `EpochMetrics`: the curves, one point per epoch (MLflow's step = epochs done): the mean
  training loss of the epoch, every validation number and the learning rate.
- `system_metrics`: MLflow's system metrics monitor (CPU, memory, disk, network under
  `system/`, one point a minute) while fitting, plus the process's CPU seconds and peak memory
  (`training_cpu_seconds`, `training_peak_memory_megabytes`), which every run has.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import resource
import time
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl

from ampmodel.config import WaveNetConfig
from training.evaluate import ESR_DEFINITION, ESR_DEFINITION_TAG, PRIMARY

# MLflow's system metrics: sampled every SYSTEM_METRICS_SECONDS, logged as the mean of
# SYSTEM_METRICS_SAMPLES samples, so a run shorter than a minute logs none (a handful of points of
# network and disk traffic says nothing, and they led every short trial's page).
SYSTEM_METRICS_SECONDS = 10.0
SYSTEM_METRICS_SAMPLES = 6
NOTE_TAG = "mlflow.note.content"


def architecture_text(cfg: WaveNetConfig, sample_rate: int) -> str:
    """One line a person reads: family, widths, layers, dilations, kernel, activation, receptive field."""
    channels = ", ".join(str(width) for width, _ in cfg.layer_arrays)  # per layer array (nam family)
    family = "WaveNet" if cfg.family == "paper" else "NAM WaveNet"
    kernels = cfg.layer_kernel_sizes
    kernel = f"kernel {kernels[0]}" if len(set(kernels)) == 1 else f"kernels {', '.join(map(str, kernels))}"
    head = f", a {cfg.head_kernel_size}-tap head" if cfg.head_kernel_size > 1 else ""
    return (f"{family}, {channels} channels, {cfg.layers} layers (dilations {', '.join(map(str, cfg.dilations))}), "
            f"{kernel}{head}, {cfg.activation} activation; receptive field {cfg.receptive_field} "
            f"samples ({1000 * cfg.receptive_field / sample_rate:.1f} ms)")


def dataset_summary(datamodule: Any) -> str:
    """e.g. '3 knob settings (3 trained on, part of their audio held out for validation; 0 never trained
    on, for validation; 0 for test) at 16000 Hz, 30.0 s of DI'."""
    groups = list(datamodule.groups)
    seconds = sum(len(x) for x in datamodule.data.inputs.values()) / datamodule.sample_rate
    return (f"{len(groups)} knob settings ({groups.count('train')} trained on, part of their audio held out for "
            f"validation; {groups.count('val')} never trained on, for validation; {groups.count('test')} for test) "
            f"at {datamodule.sample_rate} Hz, {seconds:.1f} s of DI")


# What each top-level artifact folder of a training run holds (artifacts_text lists those present).
ARTIFACT_FOLDERS = {
    "audio": "input, SPICE target and prediction{clips}: press play",
    "plots": "the same clips as waveforms and spectra",
    "settings": "ESR by knob setting, validation and test",
    "knobs": "the model's response as each knob turns",
    "model": "the model ampstudy loads",
    "checkpoints": "the best Lightning checkpoint",
}


def run_tags(cfg: Any, datamodule: Any, parent_run_id: str | None = None) -> dict[str, str]:
    """User, source and git tags (as `mlflow.start_run` would set them) and the run's description."""
    from mlflow.tracking.context.registry import resolve_tags

    knobs = ("follows the knobs (" + cfg.model.conditioning + " conditioning)" if cfg.model.conditioning != "none"
             else "fixed knobs")
    study = f" One trial of the study in the parent run `{parent_run_id}`." if parent_run_id else ""
    note = (f"**{architecture_text(cfg.model, datamodule.sample_rate)}**; {knobs}.\n\n"
            f"Trained on the SPICE Bassman 5F6-A dataset `{datamodule.manifest.get('hash', '')}`: "
            f"{dataset_summary(datamodule)}.{study}\n\n"
            "`*_esr_tail_aware` ranks models: each knob "
            "setting's ESR, floored at 1e-3 and averaged in dB, raised when the worst setting is over 10x that; "
            "`*_pooled*` metrics treat all settings as one signal. Curves (Model metrics): one point per epoch "
            "(MLflow's *Step* = epochs done); `val_esr_tail_aware_db` shows the late progress a linear ESR axis "
            "flattens. One-value metrics (`best_val_*`, `test_*`, `cost_*`) are the run's results.")
    return {**resolve_tags({}), NOTE_TAG: note, ESR_DEFINITION_TAG: ESR_DEFINITION}


def esr_text(metrics: dict[str, Any]) -> str:
    """One line of a split's numbers (training/evaluate.py), e.g. '0.0312 tail-aware (knob settings
    never trained on: geometric mean 0.0301 floored, mean 0.052, worst 0.41; trained settings'
    unseen audio: geometric mean 0.021)'; the parts that exist."""
    def num(key: str) -> str:
        value = metrics.get(key)
        return f"{value:.4g}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"

    unseen = math.isfinite(metrics.get("esr_geomean_unseen_settings", math.nan))
    text = (f"{num(PRIMARY)} tail-aware ({'knob settings never trained on' if unseen else 'all settings'}: "
            f"geometric mean {num('esr_geomean_floored')} floored, mean {num('esr_mean_scored_settings')}, "
            f"worst {num('esr_worst_scored_setting')}")
    if unseen and math.isfinite(metrics.get("esr_geomean_seen_settings", math.nan)):
        text += f"; trained settings' unseen audio: geometric mean {num('esr_geomean_seen_settings')}"
    return text + ")"


def add_results_to_note(client: Any, run_id: str, lines: list[str]) -> None:
    """Append a results paragraph to the run's description."""
    note = client.get_run(run_id).data.tags.get(NOTE_TAG, "")
    client.set_tag(run_id, NOTE_TAG, note + "\n\n" + "\n".join(f"- {line}" for line in lines))


def artifacts_text(client: Any, run_id: str, clip_seconds: list[float]) -> str:
    """One line naming the run's artifact folders that exist, with the logged clips' length."""
    present = [item.path for item in client.list_artifacts(run_id) if item.is_dir]
    lengths = sorted({round(seconds, 1) for seconds in clip_seconds})
    clips = f", {' / '.join(f'{s:g}' for s in lengths)} s per knob setting" if lengths else ""
    described = [f"`{name}/` ({ARTIFACT_FOLDERS[name].format(clips=clips)})" for name in ARTIFACT_FOLDERS
                 if name in present]
    return "artifacts: " + (", ".join(described) if described else "none")


def log_dataset(client: Any, run_id: str, datamodule: Any) -> None:
    """The dataset as an MLflow dataset input of the run (context 'training': it holds every split)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.exceptions import MlflowException
    from mlflow.types import ColSpec, Schema

    manifest = datamodule.manifest
    digest = str(manifest.get("hash", ""))
    schema = Schema([ColSpec("float", "input"), ColSpec("float", "target"),
                     *[ColSpec("double", name) for name in manifest.get("control_names", [])],
                     ColSpec("string", "group")])
    groups = list(datamodule.groups)
    profile = {"sample_rate": datamodule.sample_rate,
               "audio_seconds": round(sum(len(x) for x in datamodule.data.inputs.values()) / datamodule.sample_rate, 3),
               "knob_settings": len(groups), **{f"{g}_settings": groups.count(g) for g in sorted(set(groups))},
               "ngspice": manifest.get("ngspice_version", ""), "target_scale_volts": manifest.get("target_scale_volts")}
    source = {"uri": datamodule.dataset_dir.resolve().as_uri()} if datamodule.dataset_dir else {"uri": ""}
    dataset = Dataset(name=f"bassman-5f6a-{digest[:8]}", digest=digest[:36], source_type="local",
                      source=json.dumps(source), schema=json.dumps({"mlflow_colspec": schema.to_dict()}),
                      profile=json.dumps(profile))
    inputs = [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])]
    try:
        client.log_inputs(run_id, datasets=inputs)
    except MlflowException:
        # Runs that log one new dataset at the same moment (the first trials of workers sharing a tracking
        # server) race in MLflow's check-then-insert of the dataset row: all but one get a unique-key
        # violation. That row exists now, so logging again links it to this run.
        client.log_inputs(run_id, datasets=inputs)


class EpochMetrics(pl.Callback):
    """Logs the learning curves with MLflow step = epochs done (1, 2, ...), so charts read in epochs.
    The objective is also logged in dB (`val_esr_tail_aware_db`): on MLflow's linear axis an ESR
    curve is flat after its first epochs, in dB its progress shows to the end."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        values = {"train_loss": trainer.callback_metrics.get("train_loss_epoch")}
        if trainer.optimizers:
            values["learning_rate"] = trainer.optimizers[0].param_groups[0]["lr"]
        self._log(values, trainer.current_epoch + 1)

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        values = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        primary = values.get(f"val_{PRIMARY}")
        if primary is not None and float(primary) > 0:
            values[f"val_{PRIMARY}_db"] = 10 * math.log10(float(primary))
        self._log(values, trainer.current_epoch + 1)

    def _log(self, values: dict[str, Any], step: int) -> None:
        metrics = as_metrics(values, step)
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)


@contextlib.contextmanager
def system_metrics(client: Any, run_id: str, tracking_uri: str) -> Iterator[None]:
    """MLflow's system metrics while the block runs (when psutil is installed), then CPU seconds
    and peak memory of this process during it."""
    monitor = None
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
        monitor = SystemMetricsMonitor(run_id, sampling_interval=SYSTEM_METRICS_SECONDS,
                                       samples_before_logging=SYSTEM_METRICS_SAMPLES, tracking_uri=tracking_uri)
        monitor.start()
    except ImportError:  # psutil missing: our own two numbers still follow
        monitor = None
    cpu = time.process_time()
    try:
        yield
    finally:
        if monitor is not None:
            monitor.finish()
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: kilobytes
        # Not under system/: MLflow lists that group first on a run's page, and these two are the
        # training's cost, which every run has (MLflow's own system metrics only a long one).
        client.log_batch(run_id, metrics=as_metrics({"training_cpu_seconds": time.process_time() - cpu,
                                                     "training_peak_memory_megabytes": peak_kb / 1024}))


def as_metrics(values: dict[str, Any], step: int = 0) -> list[Any]:
    """MLflow metrics of the finite numbers in `values` (tensors included), at `step`, stamped now."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in values.items() if v is not None and math.isfinite(float(v))]
