"""`train(cfg)`: one training run, the function behind `ampstudy train` and every Optuna trial.

It prepares (or reuses) the SPICE dataset, opens an MLflow run (nested under a study's parent run
when given; its description, source tags and dataset input come from training/run_info.py), fits
the WaveNet with ESR loss, early stopping (unless train.early_stopping_patience = 0) and a best
checkpoint on the device `train.accelerator` resolves to (training/devices.py), logging one point
per epoch and system metrics, then logs the compute cost, the best model (weights + config +
TorchScript, and as an MLflow model anyone can register), audio examples and plots. The test split
is touched only when `evaluate_test=True` (the CLI), never by studies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import signal
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from mlflow.entities import Param
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from optuna.exceptions import TrialPruned

from ampmodel.cost import compute_cost
from datamodules.bassman import BassmanDataModule
from foundation.configs import flatten, to_dict
from foundation.errors import AmpStudyError, StopRequested
from foundation.stop_flag import StopFlag
from training import artifacts, run_info, tracking
from training.devices import Placement, placement, resolved
from training.evaluate import PRIMARY, evaluate_net, finite_numbers
from training.knob_response import log_knob_response
from training.lightning_module import MONITOR, AmpModule, reference_power
from training.mlflow_model import log_amp_model
from training.model_io import save_model
from training.run_config import RunConfig

MAX_EXAMPLE_SETTINGS = 3  # audio/plots for at most this many knob settings per run


# Why fitting ended (TrainResult.stopped_by); only TIME_LIMIT depends on the machine and its load.
EARLY_STOPPING, SAMPLE_BUDGET, MAX_EPOCHS, TIME_LIMIT = "early stopping", "sample budget", "max_epochs", "time limit"


@dataclass(frozen=True)
class TrainResult:
    run_id: str  # MLflow run id ("" when tracking is off)
    cost: dict[str, float]
    model_dir: Path
    epochs: int
    wall_seconds: float
    steps: int = 0  # optimiser steps (training batches)
    samples: int = 0  # training samples: steps x batch_size x segment_samples
    stopped_by: str = ""  # EARLY_STOPPING, SAMPLE_BUDGET, MAX_EPOCHS or TIME_LIMIT
    device: str = ""  # where it trained and in which precision, e.g. "cpu (2 threads), 32"
    threads: int = 0  # torch intra-op threads while training
    val_metrics: dict[str, Any] = field(default_factory=dict)  # of the best checkpoint
    test_metrics: dict[str, Any] = field(default_factory=dict)  # only with evaluate_test=True

    @property
    def val_esr_tail_aware(self) -> float:
        """The validation number every decision uses (training/evaluate.py PRIMARY)."""
        return self.val_metrics[PRIMARY]

    @property
    def test_esr_tail_aware(self) -> float | None:
        return self.test_metrics.get(PRIMARY)


def train(cfg: RunConfig, *, callbacks: Sequence[Callback] = (), parent_run_id: str | None = None,
          tags: dict[str, str] | None = None, tracking_uri: str | None = None, evaluate_test: bool = False,
          progress: bool = True, track: bool = True, work_dir: str | Path | None = None,
          stop: StopFlag | None = None) -> TrainResult:
    """Train one model as `cfg` says; see the module docstring. `track=False` skips MLflow entirely.
    `stop`: a flag a signal handler raises; training ends with StopRequested at the next safe point
    (between steps and validation batches, between phases; at once while the dataset is built).

    In order: data (from cfg alone) -> module (built with all it needs) -> run -> fit -> evaluate -> log.
    """
    started = time.perf_counter()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    where = placement(cfg.train)  # the device, its precision and batch shape, every "auto" resolved
    cfg = dataclasses.replace(cfg, train=resolved(cfg.train, where))
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    datamodule = BassmanDataModule(cfg.data, receptive_field=cfg.model.receptive_field,
                                   segment_samples=cfg.train.segment_samples, batch_size=cfg.train.batch_size,
                                   progress=progress, device=where.device)
    stop = stop or StopFlag()
    with stop.interruptible():
        datamodule.prepare_data()  # the only expensive data step (ngspice), cached by content hash
    datamodule.setup("fit")
    reference = reference_power(datamodule, cfg.train.loss.pre_emphasis) if cfg.train.loss.reference != "batch" else None
    module = AmpModule(cfg, groups=datamodule.groups, reference=reference,
                       describe_setting=datamodule.describe_setting)

    uri = tracking_uri or tracking.default_tracking_uri()
    client = tracking.client(uri) if track else None
    run_id = _start_run(client, uri, cfg, parent_run_id, datamodule, tags) if client is not None else ""
    work = Path(work_dir) if work_dir else Path(tracking.TRACKING_DIR) / "work" / (run_id or f"untracked-{time.time_ns()}")
    try:
        cost = compute_cost(module.net, fs=datamodule.sample_rate)
        if client is not None:
            _log_params(client, run_id, cfg, cost, device=where.describe())
            run_info.log_dataset(client, run_id, datamodule)
            callbacks = [*callbacks, run_info.EpochMetrics(client, run_id)]
        callbacks = [*callbacks, StopAtSafePoints(stop)]
        trainer, checkpoint = _trainer(cfg, where, callbacks, work, progress)
        with run_info.system_metrics(client, run_id, uri) if client is not None else contextlib.nullcontext():
            try:
                trainer.fit(module, datamodule=datamodule)
            except SIGTERMException:  # Lightning's own SIGTERM stop, at a batch end; a SystemExit(0) if let through
                raise StopRequested(signal.SIGTERM, f"stopped by SIGTERM at a safe point (after step "
                                                    f"{trainer.global_step})") from None
        stop.check("training ended")
        val = _best_weights(module, trainer, checkpoint, datamodule, where)
        if not math.isfinite(val[PRIMARY]):
            raise AmpStudyError("validation ESR is not finite; the data may be silent or training diverged")
        test_metrics = evaluate_net(module.net, datamodule, "test") if evaluate_test else {}
        module.net.cpu()  # saved, logged and rendered from the CPU
        model_dir = save_model(work / "model", module.net, cfg, _data_info(datamodule))
        stop.check("the model was evaluated and saved, before logging it")
        if client is not None:
            _log_results(client, run_id, module, datamodule, trainer, checkpoint, val, test_metrics, model_dir)
            client.set_terminated(run_id, "FINISHED")
    except BaseException as err:
        if client is not None:
            _mark_failed(client, run_id, err)
        raise
    return TrainResult(run_id=run_id, cost=cost, model_dir=model_dir,
                       epochs=trainer.current_epoch, wall_seconds=time.perf_counter() - started,
                       steps=trainer.global_step, samples=samples_trained(trainer, cfg),
                       stopped_by=stop_reason(trainer), device=where.describe(), threads=torch.get_num_threads(),
                       val_metrics=val, test_metrics=test_metrics)


def _best_weights(module: AmpModule, trainer: pl.Trainer, checkpoint: ModelCheckpoint,
                  datamodule: BassmanDataModule, where: Placement) -> dict[str, Any]:
    """Load the best weights into `module` (on `where.device`) and return their validation numbers:
    the best checkpoint's, or the final weights' when the budget ended training after the last
    validation (a sample budget that ends mid-epoch) and they validate better."""
    final = None
    if trainer.global_step > module.validated_at_step:
        module.net.to(where.device)
        final = evaluate_net(module.net, datamodule, "val"), {k: v.detach().clone() for k, v in
                                                              module.state_dict().items()}
    if checkpoint.best_model_path:
        # Tensors and plain containers only (the checkpoint holds no objects that need unpickling).
        best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
        module.load_state_dict(best["state_dict"])
    module.net.to(where.device)  # Lightning hands the module back on the CPU
    val = evaluate_net(module.net, datamodule, "val") if checkpoint.best_model_path or final is None else final[0]
    if final is not None and final[0][PRIMARY] < val[PRIMARY]:
        module.load_state_dict(final[1])
        module.net.to(where.device)
        val = final[0]
    return val


def samples_per_step(cfg: RunConfig) -> int:
    """Training samples one optimiser step consumes (batch and segment resolved: see `resolved`)."""
    return int(cfg.train.batch_size) * int(cfg.train.segment_samples)


def samples_trained(trainer: pl.Trainer, cfg: RunConfig) -> int:
    return trainer.global_step * samples_per_step(cfg)


def stop_reason(trainer: pl.Trainer) -> str:
    if trainer.early_stopping_callback is not None and trainer.early_stopping_callback.stopped_epoch:
        return EARLY_STOPPING
    if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
        return SAMPLE_BUDGET
    if trainer.current_epoch >= (trainer.max_epochs or 0):
        return MAX_EPOCHS
    return TIME_LIMIT


def _start_run(client, uri: str, cfg: RunConfig, parent_run_id: str | None, datamodule: BassmanDataModule,
               tags: dict[str, str] | None) -> str:
    run_tags = {MLFLOW_RUN_NAME: cfg.run_name} if cfg.run_name else {}
    if parent_run_id:
        run_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    run_tags.update({**run_info.run_tags(cfg, datamodule, parent_run_id),
                     "dataset_hash": str(datamodule.manifest.get("hash", "")), **(tags or {})})
    run = client.create_run(tracking.ensure_experiment(cfg.experiment, uri), tags=run_tags,
                            run_name=cfg.run_name or None)
    return run.info.run_id


def _log_results(client, run_id: str, module: AmpModule, datamodule: BassmanDataModule, trainer: pl.Trainer,
                 checkpoint: ModelCheckpoint, val: dict[str, Any], test: dict[str, Any], model_dir: Path) -> None:
    # Step 0: the run's results (the curves are at steps 1, 2, ... = epochs); the MLflow model logged
    # below carries the step-0 metrics.
    results = {"epochs": trainer.current_epoch, "steps": trainer.global_step,
               "samples_trained": samples_trained(trainer, module.run_config),
               **{f"best_val_{k}": v for k, v in finite_numbers(val).items()},
               **{f"test_{k}": v for k, v in finite_numbers(test).items()}}
    client.log_batch(run_id, metrics=run_info.as_metrics(results))
    client.log_artifacts(run_id, str(model_dir), "model")
    log_amp_model(run_id, model_dir)
    if checkpoint.best_model_path:
        client.log_artifact(run_id, checkpoint.best_model_path, "checkpoints")
    examples = example_settings(datamodule)
    clips = artifacts.log_examples(client, run_id, module.net, datamodule, examples,
                                   module.run_config.train.audio_seconds)
    log_knob_response(client, run_id, module.net, datamodule)
    artifacts.log_settings_table(client, run_id, val["settings_table"], "val")
    if test:
        artifacts.log_settings_table(client, run_id, test["settings_table"], "test")
    run_info.add_results_to_note(client, run_id, [
        f"validation ESR {run_info.esr_text(val)}",
        *([f"test ESR {run_info.esr_text(test)}"] if test else []),
        f"{trainer.current_epoch} epochs ({trainer.global_step} steps, "
        f"{samples_trained(trainer, module.run_config):,} training samples), stopped by {stop_reason(trainer)}",
        run_info.artifacts_text(client, run_id, clips)])


def example_settings(datamodule: BassmanDataModule) -> list[int]:
    """Settings whose validation audio is logged: one unseen (validation group) first if there is one."""
    unseen = datamodule.settings_in("val")
    seen = [i for i in datamodule.settings_in("train") if datamodule.split_spans("val", i)]
    return (unseen[:1] + seen)[:MAX_EXAMPLE_SETTINGS]


def _trainer(cfg: RunConfig, where: Placement, callbacks: Sequence[Callback], work: Path,
             progress: bool) -> tuple[pl.Trainer, ModelCheckpoint]:
    train = cfg.train
    # Both act after validations only: a sample budget can end training before an epoch's validation.
    checkpoint = ModelCheckpoint(dirpath=work / "checkpoints", filename="best", monitor=MONITOR, mode="min",
                                 save_top_k=1, enable_version_counter=False, save_on_train_epoch_end=False)
    # Patience 0 = no early stopping: train for the sample budget, max_epochs or the time limit.
    stopper = [EarlyStopping(monitor=MONITOR, mode="min", patience=train.early_stopping_patience,
                             check_on_train_epoch_end=False)] if train.early_stopping_patience else []
    # Lightning's own banner lines ("GPU available: ...") repeat what the run's `device` param says.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    trainer = pl.Trainer(
        accelerator=where.accelerator, devices=1, precision=where.precision, max_epochs=train.max_epochs,
        max_steps=math.ceil(train.max_samples / samples_per_step(cfg)) if train.max_samples else -1,
        max_time={"minutes": train.max_minutes} if train.max_minutes else None,
        limit_train_batches=train.limit_train_batches or 1.0,
        check_val_every_n_epoch=train.val_every_epochs, gradient_clip_val=train.gradient_clip or None,
        callbacks=[checkpoint, *stopper, *callbacks], logger=False, enable_progress_bar=progress,
        enable_model_summary=False, num_sanity_val_steps=0, deterministic=False,
        default_root_dir=str(work),
    )
    return trainer, checkpoint


def _log_params(client, run_id: str, cfg: RunConfig, cost: dict[str, float], device: str = "") -> None:
    params = {k: ("" if v is None else str(v))[:6000] for k, v in flatten(to_dict(cfg)).items()}
    params["train.device"] = device  # what train.accelerator / precision resolved to, e.g. "cuda (NVIDIA ...), 32"
    params["model.receptive_field"] = str(cfg.model.receptive_field)
    params.update({f"cost.{k}": str(v) for k, v in cost.items()})
    for start in range(0, len(params), 100):  # MLflow accepts at most 100 params per batch
        chunk = list(params.items())[start:start + 100]
        client.log_batch(run_id, params=[Param(k, v) for k, v in chunk])
    for name, value in cost.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
            client.log_metric(run_id, f"cost_{name}", float(value))


class StopAtSafePoints(Callback):
    """Ends fitting with StopRequested after the step or validation batch in which a stop was asked
    for: never inside an optimiser step, a metric's logging or a checkpoint's writing."""

    def __init__(self, stop: StopFlag) -> None:
        self.stop = stop

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.stop.check(f"after step {trainer.global_step}")

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.stop.check(f"during validation after step {trainer.global_step}")


def _mark_failed(client, run_id: str, err: BaseException) -> None:
    """Keep what was logged; record why the run ended. A pruned trial's run ends FINISHED (it did
    what it was asked: train until the pruner stopped it); its name and tags say pruned."""
    try:
        if isinstance(err, TrialPruned):
            client.set_tag(run_id, "pruned", "true")
            client.set_terminated(run_id, "FINISHED")
            return
        if isinstance(err, (StopRequested, KeyboardInterrupt)):  # a stop, not a fault: no traceback
            client.set_tag(run_id, "error", str(err) or type(err).__name__)
            client.set_terminated(run_id, "KILLED")
            return
        client.set_tag(run_id, "error", f"{type(err).__name__}: {err}"[:5000])
        client.set_tag(run_id, "traceback", "".join(traceback.format_exception(err))[-5000:])
        client.set_terminated(run_id, "FAILED")
    except Exception:  # never hide the original error behind a tracking error
        pass


def _data_info(datamodule: BassmanDataModule) -> dict[str, Any]:
    manifest = datamodule.manifest
    return {
        "sample_rate": datamodule.sample_rate,
        "dataset_hash": manifest.get("hash"),
        "input_full_scale_volts": manifest.get("input_full_scale_volts"),
        "target_scale_volts": manifest.get("target_scale_volts"),
        "settings": [{**to_dict(s), "group": g} for s, g in zip(datamodule.settings, datamodule.groups)],
    }
