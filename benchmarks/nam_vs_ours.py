"""NAM's `standard` WaveNet trained by ampstudy's train() vs by Neural Amp Modeler's own trainer.

    .venv/bin/python benchmarks/nam_vs_ours.py --minutes 15
    .venv/bin/python benchmarks/nam_vs_ours.py --smoke --data-dir DIR   # the tiny study's data, seconds

The same architecture (our preset nam-standard = NAM's `standard`, 13,801 weights + head_scale),
the same SPICE data (one knob setting, `--seconds` of synthetic DI, our train/val/test split), the
same budget of process CPU seconds on one thread (CPU time, not wall time: the machine may be
shared; each trainer stops at the first training batch that ends past the budget, and the table
gives the budget and the CPU seconds each used), each trainer with its own recipe:
- ours: `train(cfg)` with the project's defaults (ESR loss with pre-emphasis 0.95, Adam 5e-3,
  plateau decay, random 8192-sample segments, batch 16, best validation checkpoint);
- NAM: neural-amp-modeler 0.12.3's LightningModule and its trainer settings (MSE + pre-emphasised
  multi-resolution STFT loss, Adam 0.004, exponential decay 0.993 per epoch, batch 16, 8192-sample
  windows, best validation-ESR checkpoint), on our training audio.
Both test ESRs are computed by the same code on the same test audio: ampmodel's ESR with
pre-emphasis 0.95 over every test span (with its true preceding context), as `promote` reports it;
the ratios NAM / ours come from the one run. Written to benchmarks/results/nam_vs_ours.md
(`--no-write`: print only). `--smoke` trains both on the tiny study's dataset (studies/tiny.toml's
[base.data], in `--data-dir` when given) for a couple of CPU seconds each, at batch 4 x 4096
samples, in temporary folders, and writes nothing. Needs `make bench-deps`.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without install

from ampmodel.metrics import ESRAccumulator  # noqa: E402
from datamodules.bassman import BassmanDataModule  # noqa: E402
from training.evaluate import predict_span  # noqa: E402
from training.run_config import run_config_from_mapping  # noqa: E402
from training.train import train  # noqa: E402

from benchmarks.results_file import publish  # noqa: E402
from benchmarks.nam_0_12 import prefer_nam_0_12  # noqa: E402

prefer_nam_0_12()  # NAM's A1 trainer and WaveNet constructor are 0.12.3's (0.13 trains A2)

BATCH, SEGMENT = 16, 8192  # both trainers' batch shape
SMOKE_CPU_SECONDS = 1.5  # per trainer in --smoke
SMOKE_BATCH, SMOKE_SEGMENT = 4, 4096  # NAM's multi-resolution STFT loss needs windows past its 2048-point FFT
BELOW_ONE = np.nextafter(np.float32(1), np.float32(0))


def cpu_budget(callback_class: type, seconds: float):
    """A Lightning callback (of either package's Callback class) that stops fitting once the process
    has used `seconds` of CPU time since training started."""

    class CpuBudget(callback_class):
        def __init__(self) -> None:
            self.start, self.used = 0.0, 0.0

        def on_train_start(self, trainer, module) -> None:
            self.start = time.process_time()

        def on_train_batch_end(self, trainer, *args) -> None:
            self.used = time.process_time() - self.start
            if self.used >= seconds:
                trainer.should_stop = True

    return CpuBudget()


def split_esr(predict, datamodule: BassmanDataModule, split: str = "test") -> float:
    """ampmodel's ESR (pre-emphasis 0.95) of `predict(batch)` over every span of `split`."""
    acc = ESRAccumulator()
    with torch.no_grad():
        for batch in datamodule.eval_dataloader(split):
            acc.update(predict(batch), batch["target"], batch["setting"])
    return acc.esr()


def train_ours(cfg, budget: float, work: Path) -> dict:
    from lightning.pytorch.callbacks import Callback

    callback = cpu_budget(Callback, budget)
    # Untracked; the store named only keeps train() from making mlruns/ in the working directory.
    result = train(cfg, callbacks=[callback], track=False, progress=False, work_dir=work,
                   tracking_uri=f"sqlite:///{work}/mlflow.db")
    from training.model_io import load_model

    net = load_model(result.model_dir).net
    return {"net": net, "epochs": result.epochs, "cpu": callback.used, "params": result.cost["params"],
            "predict": lambda batch: predict_span(net, batch)}


def nam_datasets(datamodule: BassmanDataModule, split: str, rf: int, ny: int | None):
    """NAM Datasets over our `split` spans, each starting rf-1 samples early: NAM trains only on
    outputs with a full receptive field, so every target of the span (and none before it) is used."""
    from nam.data import ConcatDataset, Dataset

    data, sets = datamodule.data, []
    for setting in datamodule.settings_in("train"):
        x_all, y_all = data.inputs[data.input_of[setting]], data.targets[setting]
        for start, end in datamodule.split_spans(split, setting):
            lo = start - (rf - 1)
            pad = np.zeros(max(0, -lo), dtype=np.float32)
            x = np.concatenate([pad, x_all[max(lo, 0):end]])
            y = np.concatenate([pad, y_all[max(lo, 0):end]])
            # Our targets peak at exactly 1.0 (the dataset's scale is the training settings' peak) and NAM
            # refuses |y| >= 1 ("Output clipped."): the peak sample moves 6e-8 below it.
            y = np.clip(y, -BELOW_ONE, BELOW_ONE)
            if len(x) >= rf + (ny or 1) - 1:
                sets.append(Dataset(torch.from_numpy(x), torch.from_numpy(y.astype(np.float32)), nx=rf, ny=ny,
                                    sample_rate=datamodule.sample_rate, require_input_pre_silence=None))
    return ConcatDataset(sets)


def train_nam(datamodule: BassmanDataModule, budget: float, seed: int, work: Path, batch: int = BATCH,
              segment: int = SEGMENT) -> dict:
    import pytorch_lightning as pl
    from nam.train import core
    from nam.train.lightning_module import LightningModule

    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # its GPU/TPU banner
    torch.manual_seed(seed)
    config = {"net": {"name": "WaveNet", "config": core.get_wavenet_config(core.Architecture.STANDARD)},
              "loss": {"val_loss": "esr", "pre_emph_mrstft_weight": core._CAB_MRSTFT_PRE_EMPH_WEIGHT,
                       "pre_emph_mrstft_coef": core._CAB_MRSTFT_PRE_EMPH_COEF},  # NAM's fit_mrstft=True default
              "optimizer": {"lr": 0.004}, "lr_scheduler": {"class": "ExponentialLR", "kwargs": {"gamma": 0.993}}}
    module = LightningModule.init_from_config(config)
    rf = module.net.receptive_field
    train_loader = torch.utils.data.DataLoader(nam_datasets(datamodule, "train", rf, segment), batch_size=batch,
                                               shuffle=True, drop_last=True)
    val_loader = torch.utils.data.DataLoader(nam_datasets(datamodule, "val", rf, None))

    class KeepBest(pl.Callback):  # NAM keeps its best validation-ESR checkpoint; in memory here
        def __init__(self) -> None:
            self.best, self.state = float("inf"), None

        def on_validation_end(self, trainer, pl_module) -> None:
            value = float(trainer.callback_metrics.get("val_loss", float("inf")))
            if value < self.best:
                self.best, self.state = value, copy.deepcopy(pl_module.state_dict())

    keep, budget_cb = KeepBest(), cpu_budget(pl.Callback, budget)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=10**6, callbacks=[keep, budget_cb], logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         num_sanity_val_steps=0, default_root_dir=str(work))
    trainer.fit(module, train_loader, val_loader)
    if keep.state is not None:
        module.load_state_dict(keep.state)
    net = module.net.eval()
    return {"net": net, "epochs": trainer.current_epoch, "cpu": budget_cb.used,
            "params": sum(p.numel() for p in net.parameters()),
            "predict": lambda batch: net(batch["input"][:, 0], pad_start=False)[:, None]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0, help="CPU minutes of training for each trainer")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of synthetic DI (default dataset: 60)")
    parser.add_argument("--pots", default="0.5,0.5,0.5,0.5", help="the knob setting volume,treble,bass,middle")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="ngspice processes for the data (0 = all cores)")
    parser.add_argument("--data-dir", help="dataset cache (default: data/, or the tiny study's with --smoke)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"the tiny study's dataset, {SMOKE_CPU_SECONDS:g} CPU s per trainer; writes nothing")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/results/ alone")
    args = parser.parse_args(argv)
    if not args.minutes > 0 or not args.seconds > 0:
        parser.error("--minutes and --seconds must be positive numbers")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        text = compare(args)
    finally:
        torch.set_num_threads(threads)  # main() may run inside another process (the tests)
    publish("nam_vs_ours", text, write=not args.smoke and not args.no_write, argv=argv)
    return 0


def compare(args: argparse.Namespace) -> str:
    """Train both, score both; the Markdown text of the comparison."""
    if args.smoke:
        batch, segment, budget = SMOKE_BATCH, SMOKE_SEGMENT, SMOKE_CPU_SECONDS
        data_table = {}  # replaced by the tiny study's data below
    else:
        batch, segment, budget = BATCH, SEGMENT, 60 * args.minutes
        pots = dict(zip(("volume", "treble", "bass", "middle"), (float(v) for v in args.pots.split(","))))
        data_table = {"corpus_seconds": args.seconds, "settings": [pots], "workers": args.workers,
                      **({"data_dir": args.data_dir} if args.data_dir else {})}
    cfg = run_config_from_mapping({
        "experiment": "benchmark-nam-vs-ours", "data": data_table, "model": {"preset": "nam-standard"},
        "train": {"threads": 1, "seed": args.seed, "max_epochs": 10**6, "early_stopping_patience": 10**6,
                  "batch_size": batch, "segment_samples": segment, "audio_seconds": 0}})
    if args.smoke:
        from studies.spec import load_study_spec

        tiny = load_study_spec(REPO / "studies" / "tiny.toml").base.data
        if args.data_dir:
            tiny = dataclasses.replace(tiny, data_dir=args.data_dir)
        cfg = dataclasses.replace(cfg, data=tiny)
        what = f"SMOKE RUN on the tiny study's data: {tiny.corpus_seconds:g} s of DI at {len(tiny.settings)} settings"
    else:
        what = f"{args.seconds:g} s of DI at {args.pots}"
    datamodule = BassmanDataModule(cfg.data, receptive_field=cfg.model.receptive_field, segment_samples=segment,
                                   batch_size=batch, progress=not args.smoke)
    datamodule.prepare_data()
    datamodule.setup("fit")
    rows = []
    with tempfile.TemporaryDirectory(prefix="nam-vs-ours-") as tmp:
        for name, run in (("ampstudy train()", lambda: train_ours(cfg, budget, Path(tmp) / "ours")),
                          ("NAM 0.12.3 trainer", lambda: train_nam(datamodule, budget, args.seed, Path(tmp) / "nam",
                                                                   batch, segment))):
            print(f"training: {name} for {budget:g} process-CPU seconds ...", flush=True)
            out = run()
            rows.append((name, out, split_esr(out["predict"], datamodule, "val"),
                         split_esr(out["predict"], datamodule)))
    (_, _, our_val, our_test), (_, _, nam_val, nam_test) = rows
    lines = [f"NAM 'standard' WaveNet, {what}, {cfg.data.sample_rate} Hz; batch {batch} x {segment} samples, "
             f"seed {args.seed}. Budget: {budget:g} process-CPU seconds of training per trainer on 1 thread "
             "(CPU s = what each used: it stops at the first batch end past the budget). ESR with pre-emphasis "
             "0.95 on the same audio, by the same code.", "",
             "| trainer | params | epochs | CPU s | val ESR | test ESR |",
             "| --- | ---: | ---: | ---: | ---: | ---: |",
             *(f"| {name} | {out['params']} | {out['epochs']} | {out['cpu']:.1f} | {val:.4f} | {test:.4f} |"
               for name, out, val, test in rows), "",
             f"- test ESR, NAM's trainer / ours: {nam_test / our_test:.2f}x",
             f"- val ESR, NAM's trainer / ours: {nam_val / our_val:.2f}x"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
