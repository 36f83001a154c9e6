"""The peer race: NAM's own trainers against ampstudy's train(), at each of NAM's sizes, several seeds.

    .venv/bin/python benchmarks/peer_race.py --minutes 5 --seeds 3              # all five sizes
    .venv/bin/python benchmarks/peer_race.py --minutes 20 --seeds 3 --sizes nano,A2
    .venv/bin/python benchmarks/peer_race.py --smoke --data-dir DIR             # the tiny study's data, seconds

NAM's use case: a snapshot capture, one SPICE knob setting (`--pots`), `--seconds` of synthetic DI
split by our train/val/test regions. For each size and each seed, two arms:
- **A1** (nano, feather, lite, standard): neural-amp-modeler 0.12.3's LightningModule with its
  trainer's recipe (MSE + pre-emphasised multi-resolution STFT loss, Adam 0.004, exponential decay
  0.993 per epoch, batch 16 x 8192-sample windows, the best validation-ESR checkpoint), against
  `train(cfg)` of the same net (our presets nam-nano ... nam-standard copy NAM's weight for weight:
  the same parameters and MACs/sample, so these arms isolate the trainer);
- **A2**: neural-amp-modeler 0.13.0's default snapshot architecture and recipe (`train_nam_a2`: two
  non-gated submodels of 3 and 8 channels trained together, packed into grouped convolutions, each
  restored to its best validation checkpoint; the one scored is channels_8, what NAM's plugin plays
  at full quality), against `train(cfg)` of that submodel alone (our preset nam-a2: the same net,
  weight for weight). NAM's recipe spends part of its budget on channels_3 (about 14 % more MACs
  per step than channels_8 alone); ours spends all of it on the net scored;
- **ours** trains with the project's defaults (ESR loss with pre-emphasis 0.95, Adam 5e-3, plateau
  decay, random 8192-sample segments, batch 16, the best validation checkpoint), or with an ablation
  of them: `--ours-set train.loss.kind=esr_stft` (repeatable, training settings only) names the
  change in the arm's trainer, file and conditions, so its arms are kept beside the default's and
  NAM's are shared (`--arms-dir` of the race to compare with, another `--name`).

Budget: process-CPU seconds of training, one thread per arm, `--jobs` arms side by side (default: one
per core). CPU time, not wall time, because the machine is shared (by the other arm, and by whatever
else runs): an arm slowed by its neighbour gets the same compute, not less. Each arm stops at the
first training batch that ends past the budget; the table gives what each used. Each arm runs in its
own process (NAM 0.12.3 on its path for NAM's arms, benchmarks/nam_0_12.py).

Scores, all on the same test audio by the same code (each span with its true preceding context):
- **ESR (ours)**: ampmodel's whole-signal ESR with pre-emphasis 0.95, as `promote` reports it;
- **NAM val ESR**: plain ESR (no pre-emphasis) of each span, averaged over spans, as NAM's validation
  computes its `val_loss` (one span per batch);
- **MR-STFT**: ampmodel's multi-resolution STFT distance (spectral convergence + log magnitude,
  FFT sizes 512/1024/2048), averaged over spans weighted by length.
Medians over seeds with [min, max]; the ratio NAM / ours of the medians; the same scores on the
validation split beside them. With the default 60 s of DI, test and validation each hold three
regions of 2 s (audio.region_split 0.8/0.1/0.1), so a verdict rests on 6 s of guitar: `--seconds`
buys a larger test set with SPICE time. The issue's goal ("ours at least 3x lower ESR at every
size") is checked per size. Written to benchmarks/results/peer_race.md (`--name` to keep several
budgets apart) with a figure of ESR vs parameters; `--no-write`: print only.

Resumable: each finished arm is kept as results/<name>_arms/<trainer>-<size>-seed<n>.json (its
scores, CPU and wall seconds, commit, machine, date), and a rerun of the same command trains only
the arms that are missing (an arm kept under other conditions, e.g. another budget or another net
at its size, is trained again). `--max-arms N` trains at most N arms this time (a long race in
slices that fit a session; 0 writes the table from the kept arms alone); the table says which arms
are still missing. `--smoke` runs nano and A2 (one arm per NAM version), one seed, a couple of CPU
seconds per arm at batch 4 x 4096 on the tiny study's data, and writes nothing (`--arms-dir` keeps
its arms). Needs `make bench-deps`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import dataclasses
import datetime
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without install

from ampmodel.losses import REPORTED_PRE_EMPHASIS, MultiResolutionSTFTLoss, esr, pre_emphasise  # noqa: E402
from ampmodel.metrics import ESRAccumulator  # noqa: E402
from datamodules.bassman import BassmanDataModule  # noqa: E402
from training.evaluate import predict_span  # noqa: E402
from training.run_config import run_config_from_mapping  # noqa: E402

from ampstudy.cli import with_set_items  # noqa: E402  (the one parser of --set items)
from foundation.errors import ConfigError  # noqa: E402
from benchmarks.results_file import RESULTS, STARTED_ON, machine, publish  # noqa: E402

A1_SIZES = ("nano", "feather", "lite", "standard")  # NAM's A1 architectures, smallest first
SIZES = A1_SIZES + ("A2",)
NAM_TRAINER = {**{size: "NAM 0.12.3" for size in A1_SIZES}, "A2": "NAM 0.13.0"}  # the trainer of each size
# Ours at each size: NAM's own A1 net (our nam-* presets copy it weight for weight), so the A1 arms
# differ only in the trainer; at A2's size too (nam-a2 is A2's channels_8 submodel, 12145 parameters).
OURS_MODEL = {**{size: {"preset": f"nam-{size}"} for size in A1_SIZES}, "A2": {"preset": "nam-a2"}}
NAM_RECEPTIVE_FIELD = {"A2": 6347}  # NAM 0.13's A2 (nam-a2's too: checked where NAM's arm trains)
A2_PLAYED = 1  # A2's submodel scored: channels_8, the one NAM's plugin plays at full quality
BATCH, SEGMENT = 16, 8192  # both trainers' batch shape
DEFAULT_MINUTES = 5.0  # process-CPU minutes per arm
SMOKE_CPU_SECONDS = 1.5  # per arm in --smoke
SMOKE_SIZES = ("nano", "A2")  # one per NAM trainer
SMOKE_BATCH, SMOKE_SEGMENT = 4, 4096  # NAM's multi-resolution STFT loss needs windows past its 2048-point FFT
GOAL = 3.0  # the target: ours at least this many times lower ESR than NAM's trainer
BELOW_ONE = np.nextafter(np.float32(1), np.float32(0))
METRICS = (("esr", "ESR (ours, pre-emph 0.95)"), ("nam_esr", "NAM val ESR (plain, per span)"),
           ("mrstft", "MR-STFT"))


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


def scores(predict, datamodule: BassmanDataModule, split: str = "test") -> dict[str, float]:
    """The three scores of `predict(batch)` over every span of `split` (see the module's docstring)."""
    ours, nam_esrs, stft_sum, stft_weight = ESRAccumulator(), [], 0.0, 0
    stft = MultiResolutionSTFTLoss()
    longest = max(n for n, _ in stft.resolutions)
    with torch.no_grad():
        for batch in datamodule.eval_dataloader(split):
            target = batch["target"].double()
            pred = predict(batch).double()[..., -target.shape[-1]:]  # a net with less context predicts more
            ours.update(pred, target, batch["setting"])
            nam_esrs.append(float(esr(pred, target, pre_emphasis=0.0)))
            if target.shape[-1] > longest // 2:
                stft_sum += float(stft(pred, target)) * target.shape[-1]
                stft_weight += target.shape[-1]
    return {"esr": ours.esr(), "nam_esr": float(np.mean(nam_esrs)),
            "mrstft": stft_sum / stft_weight if stft_weight else float("nan")}


def split_content(datamodule: BassmanDataModule) -> dict[str, tuple[float, float, float]]:
    """Per split, (seconds, mean power, share of that power left after the reported pre-emphasis) of the
    target: how much of a split's error the pre-emphasised ESR weighs is high-frequency content."""
    found = {}
    for split in ("train", "val", "test"):
        power = emphasised = samples = 0.0
        for setting in datamodule.settings_in("train"):
            target = datamodule.data.targets[setting]
            for start, end in datamodule.split_spans(split, setting):
                y = torch.from_numpy(np.asarray(target[start:end], dtype=np.float64))
                power += float(y.square().sum())
                emphasised += float(pre_emphasise(y, REPORTED_PRE_EMPHASIS).square().sum())
                samples += end - start
        if samples:
            found[split] = (samples / datamodule.sample_rate, power / samples, emphasised / power)
    return found


def run_config(args: argparse.Namespace, size: str, seed: int):
    """The run config of ours at `size` (its data table is the dataset both arms train on)."""
    batch, segment = (SMOKE_BATCH, SMOKE_SEGMENT) if args.smoke else (BATCH, SEGMENT)
    pots = dict(zip(("volume", "treble", "bass", "middle"), (float(v) for v in args.pots.split(","))))
    data_table = {"knobs": {"settings": [pots]}, "audio": {"corpus_seconds": args.seconds}, "workers": args.workers,
                  **({"data_dir": args.data_dir} if args.data_dir else {})}
    table = {"experiment": "benchmark-peer-race", "data": data_table, "model": dict(OURS_MODEL[size]),
             "train": {"threads": 1, "seed": seed, "max_epochs": 10**6, "early_stopping_patience": 10**6,
                       "batch_size": batch, "segment_samples": segment, "audio_seconds": 0}}
    cfg = run_config_from_mapping(with_set_items(table, args.ours_set, "--ours-set"))
    if args.smoke:
        from studies.spec import load_study_spec

        tiny = load_study_spec(REPO / "studies" / "tiny.toml").base.data
        if args.data_dir:
            tiny = dataclasses.replace(tiny, data_dir=args.data_dir)
        cfg = dataclasses.replace(cfg, data=tiny)
    return cfg


def datamodule_for(cfg, progress: bool, size: str | None = None) -> BassmanDataModule:
    """The dataset both arms train on, its spans given the context of the arm of `size` that needs more."""
    context = max(cfg.model.receptive_field, NAM_RECEPTIVE_FIELD.get(size, 0))
    datamodule = BassmanDataModule(cfg.data, receptive_field=context,
                                   segment_samples=cfg.train.segment_samples, batch_size=cfg.train.batch_size,
                                   progress=progress)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def train_ours(cfg, budget: float, work: Path) -> dict:
    from lightning.pytorch.callbacks import Callback

    from training.model_io import load_model
    from training.train import train

    callback = cpu_budget(Callback, budget)
    # Untracked; the store named only keeps train() from making mlruns/ in the working directory.
    result = train(cfg, callbacks=[callback], track=False, progress=False, work_dir=work,
                   tracking_uri=f"sqlite:///{work}/mlflow.db")
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


def train_nam(datamodule: BassmanDataModule, size: str, budget: float, seed: int, work: Path, batch: int,
              segment: int) -> dict:
    import pytorch_lightning as pl
    from nam.train import core
    from nam.train.lightning_module import LightningModule

    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # its GPU/TPU banner
    torch.manual_seed(seed)
    config = {"net": {"name": "WaveNet", "config": core.get_wavenet_config(core.Architecture(size))},
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


def train_nam_a2(datamodule: BassmanDataModule, budget: float, seed: int, work: Path, batch: int,
                 segment: int) -> dict:
    """A2 the way neural-amp-modeler 0.13.0's trainer fits it: its packed config (two submodels, 3 and 8
    channels, trained together; MSE + MR-STFT, Adam with weight decay, exponential decay 0.994),
    the mask kept after every step, each submodel's best validation checkpoint restored at the end
    (NAM's PackedBestCheckpoint writes them to disk, part of the recipe's cost)."""
    import pytorch_lightning as lp  # NAM 0.13, like 0.12.3, builds on the pytorch_lightning package
    from nam.train import core
    from nam.train.lightning_module import PackedBestCheckpoint, PackedLightningModule, PackedMaskCallback

    torch.manual_seed(seed)
    config = core._get_packed_model_config()
    module = PackedLightningModule.init_from_config(config)
    rf = module.net.receptive_field
    assert rf == NAM_RECEPTIVE_FIELD["A2"], f"A2's receptive field is {rf} in this NAM"  # the scoring context
    train_loader = torch.utils.data.DataLoader(nam_datasets(datamodule, "train", rf, segment), batch_size=batch,
                                               shuffle=True, drop_last=True)
    val_loader = torch.utils.data.DataLoader(nam_datasets(datamodule, "val", rf, None))
    best, budget_cb = PackedBestCheckpoint(dirpath=work), cpu_budget(lp.Callback, budget)
    trainer = lp.Trainer(accelerator="cpu", devices=1, max_epochs=10**6,
                         callbacks=[PackedMaskCallback(), best, budget_cb], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                         default_root_dir=str(work))
    trainer.fit(module, train_loader, val_loader)
    core._apply_packed_best_checkpoints(module, config, best.checkpoint_paths)
    net = module.net.extract_submodel(A2_PLAYED).eval()
    return {"net": net, "epochs": trainer.current_epoch, "cpu": budget_cb.used,
            "params": sum(p.numel() for p in net.parameters()),
            "predict": lambda batch: net(batch["input"][:, 0], pad_start=False)[:, None]}


def ours(args: argparse.Namespace) -> str:
    """Our trainer's label: "ours", or with an ablation "ours, train.loss.kind=esr_stft"."""
    return ", ".join(["ours", *args.ours_set])


def trainers(args: argparse.Namespace, size: str) -> tuple[str, str]:
    return NAM_TRAINER[size], ours(args)


def run_arm(args: argparse.Namespace) -> int:
    """One arm in this process (the race starts one per arm): train, score, write --out JSON."""
    size, seed = args.size, args.seed
    trainer = NAM_TRAINER[size] if args.arm == "nam" else ours(args)
    if args.arm == "nam" and size in A1_SIZES:
        from benchmarks.nam_0_12 import prefer_nam_0_12

        prefer_nam_0_12()  # NAM's A1 trainer and WaveNet constructor are 0.12.3's (0.13 trains A2)
    torch.set_num_threads(1)
    cfg = run_config(args, size, seed)
    datamodule = datamodule_for(cfg, progress=False, size=size)
    budget = budget_seconds(args)
    with tempfile.TemporaryDirectory(prefix="peer-race-") as tmp:
        if args.arm == "nam" and size == "A2":
            out = train_nam_a2(datamodule, budget, seed, Path(tmp), cfg.train.batch_size, cfg.train.segment_samples)
        elif args.arm == "nam":
            out = train_nam(datamodule, size, budget, seed, Path(tmp), cfg.train.batch_size, cfg.train.segment_samples)
        else:
            out = train_ours(cfg, budget, Path(tmp))
        result = {"trainer": trainer, "size": size, "seed": seed, "params": out["params"], "epochs": out["epochs"],
                  "cpu": out["cpu"], "val": scores(out["predict"], datamodule, "val"),
                  "test": scores(out["predict"], datamodule, "test")}
    Path(args.out).write_text(json.dumps(result))
    return 0


def arm_command(args: argparse.Namespace, trainer: str, size: str, seed: int, out: Path) -> list[str]:
    mine = trainer == ours(args)
    command = [sys.executable, str(Path(__file__).resolve()), "--arm", "ours" if mine else "nam",
               "--size", size, "--seed", str(seed), "--out", str(out), "--minutes", repr(budget_seconds(args) / 60),
               "--seconds", repr(args.seconds), "--pots", args.pots, "--workers", str(args.workers)]
    command += [f"--ours-set={item}" for item in args.ours_set] if mine else []
    return command + (["--data-dir", args.data_dir] if args.data_dir else []) + (["--smoke"] if args.smoke else [])


def budget_seconds(args: argparse.Namespace) -> float:
    """Process-CPU seconds of training per arm: --minutes, or SMOKE_CPU_SECONDS / 5 minutes by default."""
    if args.minutes is not None:
        return 60 * args.minutes
    return SMOKE_CPU_SECONDS if args.smoke else 60 * DEFAULT_MINUTES


def conditions(args: argparse.Namespace, trainer: str, size: str) -> dict:
    """What an arm was trained under: one kept under other conditions (another budget, another net
    for its size, ...) is trained again."""
    batch, segment = (SMOKE_BATCH, SMOKE_SEGMENT) if args.smoke else (BATCH, SEGMENT)
    found = {"cpu_budget_s": budget_seconds(args), "seconds": args.seconds, "pots": args.pots, "batch": batch,
             "segment": segment, "smoke": args.smoke, "net": net_name(trainer, size)}
    return found | ({"ours_set": list(args.ours_set)} if args.ours_set and trainer == ours(args) else {})


def arm_file(folder: Path, trainer: str, size: str, seed: int) -> Path:
    """nam-<size>-seed<n>.json, ours-<size>-seed<n>.json, or with an ablation
    ours+train.loss.kind=esr_stft-<size>-seed<n>.json."""
    name = "nam" if trainer.startswith("NAM") else "+".join(part.strip() for part in trainer.split(","))
    return folder / f"{name.replace('/', '_').replace(' ', '')}-{size}-seed{seed}.json"


def kept_arm(path: Path, wanted: dict) -> dict | None:
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return result if result.get("conditions") == wanted else None


def race(args: argparse.Namespace, sizes: list[str], seeds: list[int], folder: Path) -> tuple[list[dict], list]:
    """Every arm not kept in `folder`, `args.jobs` at a time (the two trainers of one size and seed side
    by side), at most `args.max_arms` of them; returns (the arms' results, the arms still missing)."""
    arms = [(trainer, size, seed) for seed in seeds for size in sizes for trainer in trainers(args, size)]
    kept = {arm: kept_arm(arm_file(folder, *arm), conditions(args, *arm[:2])) for arm in arms}
    todo = [arm for arm in arms if kept[arm] is None]
    if args.max_arms is not None:
        todo = todo[:args.max_arms]
    for arm in arms:
        if kept[arm] is not None:
            print(f"  {arm[0]:>10} {arm[1]:>8} seed {arm[2]}: kept ({kept[arm]['date']}, commit {kept[arm]['commit']})")
    if todo:
        datamodule_for(run_config(args, sizes[0], seeds[0]), progress=not args.smoke)  # simulate once, here
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="peer-race-") as tmp, \
            concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        def one(index: int, arm: tuple[str, str, int]) -> None:
            out = Path(tmp) / f"arm{index}.json"
            started = time.monotonic()
            done = subprocess.run(arm_command(args, *arm, out), capture_output=True, text=True, cwd=REPO)
            if done.returncode != 0:
                raise RuntimeError(f"arm {arm} failed (exit {done.returncode}):\n{done.stdout[-2000:]}"
                                   f"{done.stderr[-4000:]}")
            result = json.loads(out.read_text())
            result.update(conditions=conditions(args, *arm[:2]), wall=time.monotonic() - started, jobs=args.jobs,
                          commit=STARTED_ON, machine=machine(),
                          date=f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}")
            path = arm_file(folder, *arm)
            part = path.with_suffix(".part")
            part.write_text(json.dumps(result, indent=1) + "\n")
            part.replace(path)  # atomic: a killed race keeps every arm it finished, and no half of one
            kept[arm] = result
            print(f"  {arm[0]:>10} {arm[1]:>8} seed {arm[2]}: test ESR {result['test']['esr']:.4f} "
                  f"({result['cpu']:.0f} CPU s, {result['wall']:.0f} wall s)", flush=True)

        for future in [pool.submit(one, i, arm) for i, arm in enumerate(todo)]:
            future.result()
    return [kept[arm] for arm in arms if kept[arm] is not None], [arm for arm in arms if kept[arm] is None]


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.4g} [{min(values):.4g}, {max(values):.4g}]"


def report(results: list[dict], missing: list, args: argparse.Namespace, sizes: list[str],
           seeds: list[int], content: dict[str, tuple[float, float, float]]) -> tuple[str, dict]:
    """The Markdown text, and {(trainer, size): [results]} for the figure (sizes with no arm left out);
    `content`: split_content of the race's data."""
    budget = budget_seconds(args)
    arms = {}
    for r in results:
        arms.setdefault((r["trainer"], r["size"]), []).append(r)
    what = ("SMOKE RUN on the tiny study's data" if args.smoke
            else f"{args.seconds:g} s of synthetic DI at one knob setting ({args.pots})")
    recipe = f" with {', '.join(args.ours_set)} (an ablation of its defaults)" if args.ours_set else ""
    lines = [f"NAM's A1 architectures trained by NAM 0.12.3's trainer and NAM's A2 (its channels_8 submodel) by "
             f"NAM 0.13.0's, each against the same net trained by ampstudy's `train()`{recipe}, on {what}; "
             f"budget {budget:g} process-CPU seconds of training per arm on 1 thread, {args.jobs} arms side by side; "
             f"seeds {', '.join(map(str, seeds))}. Medians over seeds [min, max], scored on the test audio."]
    runs = sorted({(r.get("commit", STARTED_ON), r.get("machine", "")) for r in results})
    if len(runs) > 1 or (runs and runs[0][0] != STARTED_ON):  # arms kept from other commits or machines
        lines += ["", "The arms ran on: " + "; ".join(f"commit {c} ({m})" for c, m in runs) + "."]
    if missing:
        lines += ["", f"**Partial: {len(missing)} of {len(missing) + len(results)} arms still to run** ("
                  + ", ".join(f"{t} {s} seed {n}" for t, s, n in missing)
                  + "); the same command trains them and keeps these."]
    lines += ["", "| size | net | params | trainer | seeds | epochs | CPU s | wall s | "
              + " | ".join(label for _, label in METRICS) + " |",
              "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in METRICS) + " |"]
    for size in sizes:
        for trainer in trainers(args, size):
            rs = arms.get((trainer, size))
            if not rs:
                continue
            lines.append(f"| {size} | {net_name(trainer, size)} | {rs[0]['params']} | {trainer} | {len(rs)} | "
                         f"{statistics.median(r['epochs'] for r in rs):g} | "
                         f"{statistics.median(r['cpu'] for r in rs):.0f} | "
                         f"{statistics.median(r.get('wall', float('nan')) for r in rs):.0f} | "
                         + " | ".join(summary([r["test"][key] for r in rs]) for key, _ in METRICS) + " |")
    lines += ["", "Ratio NAM / ours of the medians (above 1: ours is better):", "",
              "| size | " + " | ".join(label for _, label in METRICS) + f" | ours >= {GOAL:g}x lower ESR |",
              "| --- | " + " | ".join("---:" for _ in METRICS) + " | --- |"]
    for size in sizes:
        theirs, mine = trainers(args, size)
        if not all((trainer, size) in arms for trainer in (theirs, mine)):
            continue
        ratio = {key: statistics.median(r["test"][key] for r in arms[(theirs, size)])
                 / statistics.median(r["test"][key] for r in arms[(mine, size)]) for key, _ in METRICS}
        lines.append(f"| {size} | " + " | ".join(f"{ratio[key]:.2f}x" for key, _ in METRICS)
                     + f" | {'yes' if ratio['esr'] >= GOAL else 'no'} |")
    lines += ["", "The validation split, for reading the verdict (both trainers choose their checkpoint on it: ours by "
              "pre-emphasised ESR, NAM by plain ESR, so each is at home under its own metric); medians over seeds:", "",
              "| size | trainer | " + " | ".join(label for _, label in METRICS) + " |",
              "| --- | --- | " + " | ".join("---:" for _ in METRICS) + " |"]
    for size in sizes:
        for trainer in trainers(args, size):
            if (trainer, size) in arms:
                lines.append(f"| {size} | {trainer} | " + " | ".join(
                    f"{statistics.median(r['val'][key] for r in arms[(trainer, size)]):.4g}" for key, _ in METRICS)
                    + " |")
    lines += ["", f"What each split holds (the target): where the share of its power left after pre-emphasis "
              f"{REPORTED_PRE_EMPHASIS:g} differs from the training split's, so does the high-frequency content "
              "the pre-emphasised ESR weighs, and a verdict on that split speaks for other music than the "
              "training audio:", "", "| split | seconds | mean power | power after pre-emphasis (share) |",
              "| --- | ---: | ---: | ---: |"]
    lines += [f"| {split} | {seconds:g} | {power:.3g} | {share:.3g} |" for split, (seconds, power, share) in content.items()]
    return "\n".join(lines), arms


def net_name(trainer: str, size: str) -> str:
    """The net an arm trains and scores: both trainers train the same one at each size."""
    return f"A1 {size}" if size in A1_SIZES else "A2, its channels_8 submodel"


def figure(arms: dict, sizes: list[str], path: Path, title: str, mine: str = "ours") -> None:
    """Test ESR (ours) vs parameters, median and [min, max] over seeds, one line per trainer; the sizes
    annotated on the line of `mine` (our trainer's label)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    series = {}  # one line per trainer over the A1 sizes; A2's pair as points of their own
    for (trainer, size), rs in arms.items():
        if size in sizes:
            label = f"{trainer}, {net_name(trainer, size) if size == 'A2' else 'A1 nets'}"
            series.setdefault(label, []).append(rs)
    for label, rows in series.items():
        rows.sort(key=lambda rs: rs[0]["params"])
        params = [rs[0]["params"] for rs in rows]
        values = [[r["test"]["esr"] for r in rs] for rs in rows]
        median = [statistics.median(v) for v in values]
        ax.errorbar(params, median, yerr=[[m - min(v) for m, v in zip(median, values)],
                                          [max(v) - m for m, v in zip(median, values)]],
                    marker="o" if len(rows) > 1 else "s", capsize=3, label=label)
    for size, rs in ((s, arms[(mine, s)]) for s in sizes if (mine, s) in arms):
        ax.annotate(size, (rs[0]["params"], statistics.median(r["test"]["esr"] for r in rs)), fontsize=8,
                    textcoords="offset points", xytext=(4, 4))
    ax.set(xscale="log", yscale="log", xlabel="parameters", ylabel="test ESR (pre-emphasis 0.95)", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def names(text: str, allowed: tuple[str, ...], parser: argparse.ArgumentParser) -> list[str]:
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    if not chosen or any(s not in allowed for s in chosen):
        parser.error(f"--sizes takes a comma-separated list of {', '.join(allowed)}; got '{text}'")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, help=f"process-CPU minutes of training per arm (default "
                        f"{DEFAULT_MINUTES:g}; {SMOKE_CPU_SECONDS:g} s with --smoke)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per arm (0, 1, ...)")
    parser.add_argument("--sizes", help=f"NAM's sizes to race (default: {','.join(SIZES)}; with --smoke "
                        f"{','.join(SMOKE_SIZES)})")
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)),
                        help="arms trained side by side, one thread each (default: one per core)")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of synthetic DI (default dataset: 60)")
    parser.add_argument("--pots", default="0.5,0.5,0.5,0.5", help="the knob setting volume,treble,bass,middle")
    parser.add_argument("--workers", type=int, default=0, help="ngspice processes for the data (0 = all cores)")
    parser.add_argument("--data-dir", help="dataset cache (default: data/, or the tiny study's with --smoke)")
    parser.add_argument("--name", default="peer_race", help="results file name under benchmarks/results/")
    parser.add_argument("--smoke", action="store_true", help=f"sizes {','.join(SMOKE_SIZES)}, one seed, "
                        f"{SMOKE_CPU_SECONDS:g} CPU s per arm on the tiny study's data; writes nothing")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/results/ alone")
    parser.add_argument("--arms-dir", help="keep finished arms here (default: results/<name>_arms/ when the table "
                        "is written; a smoke or --no-write run keeps none unless given one)")
    parser.add_argument("--max-arms", type=int, help="train at most this many missing arms now (0: table from the "
                        "kept arms only); the same command later trains the rest")
    parser.add_argument("--ours-set", metavar="train.KEY=VALUE", action="append", default=[],
                        help="an ablation: train ours with this training setting instead of the project's default "
                        "(repeatable; e.g. train.loss.kind=esr_stft); its arms are kept apart from the default's, "
                        "NAM's arms are shared (give the same --arms-dir and another --name)")
    parser.add_argument("--arm", choices=("nam", "ours"), help=argparse.SUPPRESS)  # one arm, in its own process
    parser.add_argument("--size", choices=SIZES, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if (args.minutes is not None and not args.minutes > 0) or not args.seconds > 0:
        parser.error("--minutes and --seconds must be positive numbers")
    if args.seeds < 1 or args.jobs < 1:
        parser.error("--seeds and --jobs must be at least 1")
    if args.max_arms is not None and args.max_arms < 0:
        parser.error("--max-arms must be 0 or more (0: write the table from the kept arms)")
    if any(not item.startswith("train.") for item in args.ours_set):
        parser.error("--ours-set takes training settings (train.KEY=VALUE): the net stays NAM's at each size")
    try:
        run_config(args, SIZES[0], 0)  # a bad --ours-set value: one line now, not a failed arm later
    except ConfigError as err:
        parser.error(str(err))
    if args.arm:
        return run_arm(args)
    sizes = names(args.sizes, SIZES, parser) if args.sizes else list(SMOKE_SIZES if args.smoke else SIZES)
    seeds = [0] if args.smoke else list(range(args.seeds))
    write = not args.smoke and not args.no_write
    with tempfile.TemporaryDirectory(prefix="peer-race-arms-") as scratch:  # arms of a run that writes nothing
        folder = Path(args.arms_dir) if args.arms_dir else RESULTS / f"{args.name}_arms" if write else Path(scratch)
        results, missing = race(args, sizes, seeds, folder)
    if not results:
        print("no arm has run yet: nothing to report")
        return 0
    # The splits' content, from the race's data (simulated here if no arm needed it this time)
    content = split_content(datamodule_for(run_config(args, sizes[0], seeds[0]), progress=not args.smoke))
    text, arms = report(results, missing, args, sizes, seeds, content)
    if write:
        picture = RESULTS / f"{args.name}.png"
        figure(arms, sizes, picture, f"peer race, {budget_seconds(args) / 60:g} CPU min per arm, {len(seeds)} seeds",
               ours(args))
        text += f"\n\n![test ESR vs parameters]({picture.name})"
    publish(args.name, text, write=write, argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
