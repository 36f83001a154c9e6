"""NAM's `standard` WaveNet trained by ampstudy's train() vs by Neural Amp Modeler's own trainer.

    python benchmarks/nam_vs_ours.py --minutes 15                       # the claim in the README
    python benchmarks/nam_vs_ours.py --minutes 2 --seconds 20          # a smoke run

The same architecture (our preset nam-standard = NAM's `standard`, 13,801 weights + head_scale),
the same SPICE data (one knob setting, `--seconds` of synthetic DI, our train/val/test split), the
same budget of process CPU seconds on one thread (CPU time, not wall time: the machine may be
shared), each trainer with its own recipe:
- ours: `train(cfg)` with the project's defaults (ESR loss with pre-emphasis 0.95, Adam 5e-3,
  plateau decay, random 8192-sample segments, batch 16, best validation checkpoint);
- NAM: neural-amp-modeler 0.12.3's LightningModule and its trainer settings (MSE + pre-emphasised
  multi-resolution STFT loss, Adam 0.004, exponential decay 0.993 per epoch, batch 16, 8192-sample
  windows, best validation-ESR checkpoint), on our training audio.
Both test ESRs are computed by the same code on the same test audio: ampmodel's ESR with
pre-emphasis 0.95 over every test span (with its true preceding context), as `promote` reports it.
Needs `make bench-deps`.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from ampmodel.metrics import ESRAccumulator  # noqa: E402
from datamodules.bassman import BassmanDataModule  # noqa: E402
from training.evaluate import predict_span  # noqa: E402
from training.run_config import run_config_from_mapping  # noqa: E402
from training.train import train  # noqa: E402

BATCH, SEGMENT = 16, 8192


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
    result = train(cfg, callbacks=[callback], track=False, progress=False, work_dir=work)
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
            if len(x) >= rf + (ny or 1) - 1:
                sets.append(Dataset(torch.from_numpy(x), torch.from_numpy(y.astype(np.float32)), nx=rf, ny=ny,
                                    sample_rate=datamodule.sample_rate, require_input_pre_silence=None))
    return ConcatDataset(sets)


def train_nam(datamodule: BassmanDataModule, budget: float, seed: int, work: Path) -> dict:
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
    train_loader = torch.utils.data.DataLoader(nam_datasets(datamodule, "train", rf, SEGMENT), batch_size=BATCH,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0, help="CPU minutes of training for each trainer")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of synthetic DI (default dataset: 60)")
    parser.add_argument("--pots", default="0.5,0.5,0.5,0.5", help="the knob setting volume,treble,bass,middle")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="ngspice processes for the data (0 = all cores)")
    args = parser.parse_args()
    if not args.minutes > 0 or not args.seconds > 0:
        parser.error("--minutes and --seconds must be positive numbers")
    torch.set_num_threads(1)
    pots = dict(zip(("volume", "treble", "bass", "middle"), (float(v) for v in args.pots.split(","))))
    cfg = run_config_from_mapping({
        "experiment": "benchmark-nam-vs-ours", "data": {"corpus_seconds": args.seconds, "settings": [pots],
                                                  "workers": args.workers},
        "model": {"preset": "nam-standard"},
        "train": {"threads": 1, "seed": args.seed, "max_epochs": 10**6, "early_stopping_patience": 10**6,
                  "batch_size": BATCH, "segment_samples": SEGMENT, "audio_seconds": 0}})
    datamodule = BassmanDataModule(cfg.data, receptive_field=cfg.model.receptive_field, segment_samples=SEGMENT,
                                   batch_size=BATCH, progress=True)
    datamodule.prepare_data()
    datamodule.setup("fit")
    budget = 60 * args.minutes
    rows = []
    with tempfile.TemporaryDirectory(prefix="nam-vs-ours-") as tmp:
        for name, run in (("ampstudy train()", lambda: train_ours(cfg, budget, Path(tmp) / "ours")),
                          ("NAM 0.12.3 trainer", lambda: train_nam(datamodule, budget, args.seed, Path(tmp) / "nam"))):
            print(f"training: {name} for {args.minutes:g} CPU minutes ...", flush=True)
            out = run()
            rows.append((name, out, split_esr(out["predict"], datamodule, "val"),
                         split_esr(out["predict"], datamodule)))
    print(f"\nNAM 'standard' WaveNet, {args.minutes:g} CPU minutes each on 1 thread, {args.seconds:g} s of DI at "
          f"{args.pots} ({cfg.data.sample_rate} Hz); ESR with pre-emphasis 0.95 on the same audio")
    print(f"{'trainer':20} {'params':>7} {'epochs':>7} {'CPU s':>7} {'val ESR':>9} {'test ESR':>9}")
    for name, out, val, test in rows:
        print(f"{name:20} {out['params']:>7} {out['epochs']:>7} {out['cpu']:>7.0f} {val:>9.4f} {test:>9.4f}")
    print(f"test ESR NAM's trainer / ours: {rows[1][3] / rows[0][3]:.2f}x")


if __name__ == "__main__":
    main()
