"""Speed of our WaveNet presets against neural-amp-modeler's (NAM) WaveNet at the same size.

For WaveNet1/2/3 (Damskägg et al. 2019), side by side with NAM built from the same channels,
kernel size and dilations:
- training throughput: output samples/s of forward + backward + Adam step, batch 16 x 8192
  output samples (inputs carry rf-1 extra samples), torch's default thread count;
- streaming real-time factor: audio s / wall s at batch 1, 1 s blocks, one thread. Ours keeps
  per-layer dilation state; NAM's Python package has no stateful streaming, so it is run the way
  a caller has to: each block with its rf-1 samples of history prepended (4.6% extra work);
- utilisation: counted FLOPs per CPU-second / a measured per-core peak (single-thread 2048^3 fp32
  matmul); for training FLOPs come from FlopCounterMode over a whole step (fwd+bwd).
Timed runs of ours and NAM are interleaved and the best run of each is kept; throughput is given
both per wall-clock second and per process-CPU second, the latter robust to a shared machine.

NAM differs in structure at equal size: its layers also mix the input signal in (a 1 -> 2C 1x1
"input mixer" per layer), and it sums the skips before a C -> 1 head instead of our linear
mixer over all L*C skip channels. Run: `.venv/bin/python benchmarks/model_speed.py`
(`--quick` for a smoke run). Needs `make bench-deps` (neural-amp-modeler 0.12.3) for the NAM
columns; without it only ours are shown.

Inference threads: `--threads-table` renders through the project's one inference path
(`ampmodel.streaming.render`, 4096-sample blocks as the registered model uses; `ampstudy render`
streams the same way) at one thread and at torch's default, interleaved, on an idle machine and
with one busy neighbour process per core, and writes benchmarks/results/inference_threads.md: the
measurement behind the one-thread default of render, the pyfunc and the served model.

Devices: `--devices cpu,cuda` (default: cpu, and cuda when torch sees a GPU) adds a table of
training throughput (the same step, ours) per device with the GPU/CPU ratio, CPU at `--threads`
(default 2). `--batch-sweep` times batch sizes 16..256 x 8192 per device, the measurement behind
`training/devices.py` DEVICE_PROFILES. `--trial` times one trial of the main study
(studies/bassman_wavenet.toml's base config, its dataset, tracked into a temporary store) end to
end on each device (benchmarks/trial_speed.py). On a GPU machine, in one command:

    .venv/bin/python benchmarks/model_speed.py --devices cpu,cuda --batch-sweep --trial --trial-minutes 5
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install (benchmarks.*)

from ampmodel.config import PRESETS, WaveNetConfig  # noqa: E402
from ampmodel.cost import macs_per_sample  # noqa: E402
from ampmodel.streaming import StreamingWaveNet  # noqa: E402
from ampmodel.loading import from_preset  # noqa: E402
from benchmarks.nam_0_12 import prefer_nam_0_12  # noqa: E402

prefer_nam_0_12()  # NAM's A1 trainer and WaveNet constructor are 0.12.3's (0.13 trains A2)

FS = 44100
BATCH, SEGMENT = 16, 8192


def peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Single-thread fp32 matmul GFLOP/s per CPU-second: the practical per-core ceiling."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        best = Best()
        for _ in range(repeats):
            best.time(lambda: a @ b)
    finally:
        torch.set_num_threads(old)
    return 2 * n**3 / best.cpu / 1e9


def nam_wavenet(cfg: WaveNetConfig):
    """NAM's WaveNet with the same channels, kernel size and dilations (gated tanh*sigmoid), as
    neural-amp-modeler 0.12 builds it (the version `make bench-deps` installs)."""
    from nam.models.wavenet import WaveNet as NamWaveNet

    layer_array = {
        "input_size": 1,
        "condition_size": 1,
        "channels": cfg.channels,
        "head_size": 1,
        "kernel_size": cfg.kernel_size,
        "dilations": list(cfg.dilations),
        "activation": "Tanh",
        "gated": True,
        "head_bias": True,
    }
    return NamWaveNet(layers_configs=[layer_array], head_config=None, head_scale=1.0)


class Adapter:
    """One calling convention for both: (B,1,T) -> (B,1,T-rf+1)."""

    def __init__(self, name: str, module: torch.nn.Module, receptive_field: int, is_nam: bool):
        self.name, self.module, self.rf, self.is_nam = name, module, receptive_field, is_nam

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_nam:
            return self.module(x[:, 0], pad_start=False)[:, None]
        return self.module(x)


def counted_macs_per_sample(model: Adapter) -> float:
    """FLOPs/2 per output sample at steady state (two lengths differenced), for either model."""
    if not model.is_nam:
        return macs_per_sample(model.module)
    totals = []
    for extra in (256, 1280):
        counter = FlopCounterMode(display=False)
        with counter:
            model(torch.zeros(1, 1, model.rf + extra))
        totals.append(counter.get_total_flops())
    return (totals[1] - totals[0]) / 2 / 1024


def training_step_fn(model: Adapter):
    """(step function, FLOPs per step) for forward+backward+Adam at batch 16 x 8192 outputs."""
    torch.manual_seed(0)
    x = 0.5 * torch.randn(BATCH, 1, SEGMENT + model.rf - 1)
    target = torch.tanh(2 * x[:, :, model.rf - 1 :])
    opt = torch.optim.Adam(model.module.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = (model(x) - target).square().mean()
        loss.backward()
        opt.step()

    counter = FlopCounterMode(display=False)
    with counter:
        step()  # also the warm-up
    return step, float(counter.get_total_flops())


def device_train_sps(module: torch.nn.Module, receptive_field: int, device: str, batch: int = BATCH,
                     segment: int = SEGMENT, steps: int = 4, bf16: bool = False) -> float:
    """Output samples/s of ours' fwd+bwd+Adam step on `device` (best of `steps`, after a warm-up), data
    already there (as training.train keeps it); a copy of the module, so the CPU table is untouched."""
    net = copy.deepcopy(module).to(device)
    generator = torch.Generator().manual_seed(0)
    x = (0.5 * torch.randn(batch, 1, segment + receptive_field - 1, generator=generator)).to(device)
    target = torch.tanh(2 * x[:, :, receptive_field - 1:])
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):  # "bf16-mixed"
            loss = (net(x) - target).float().square().mean()
        loss.backward()
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    step()
    best = Best()
    for _ in range(steps):
        best.time(step)
    return batch * segment / best.wall


def device_name(device: str, threads: int) -> str:
    return torch.cuda.get_device_name(device) if device.startswith("cuda") else f"cpu, {threads} threads"


def device_table(presets: list[str], devices: list[str], steps: int, threads: int, bf16: bool = False) -> None:
    """Training samples/s of ours per device, and each device's ratio to the first."""
    print(f"\ntraining throughput by device: batch {BATCH} x {SEGMENT}, fwd+bwd+Adam, wall clock, best of {steps}, "
          f"{'bf16 autocast' if bf16 else 'float32'}")
    for device in devices:
        print(f"  {device}: {device_name(device, threads)}")
    header = f"{'model':<12}" + "".join(f"{d + ' smp/s':>16}" for d in devices) + \
        "".join(f"{d + '/' + devices[0]:>12}" for d in devices[1:])
    print(header + "\n" + "-" * len(header))
    for name in presets:
        net = from_preset(name)
        sps = [device_train_sps(net, PRESETS[name].receptive_field, d, steps=steps, bf16=bf16) for d in devices]
        print(f"{name:<12}" + "".join(f"{v:>16,.0f}" for v in sps) + "".join(f"{v / sps[0]:>12.2f}" for v in sps[1:]),
              flush=True)


def batch_sweep(preset: str, devices: list[str], steps: int, batches: list[int]) -> None:
    """Samples/s by batch size (segment 8192) per device: where a device stops gaining is its batch."""
    print(f"\nbatch sweep, {preset}, segment {SEGMENT}, training samples/s (wall clock, best of {steps})")
    print(f"{'batch':>8}" + "".join(f"{d:>14}" for d in devices))
    net = from_preset(preset)
    for batch in batches:
        row = []
        for device in devices:
            try:
                row.append(f"{device_train_sps(net, PRESETS[preset].receptive_field, device, batch, steps=steps):>14,.0f}")
            except torch.OutOfMemoryError:
                row.append(f"{'out of memory':>14}")
        print(f"{batch:>8}" + "".join(row), flush=True)


def streaming_pass_fn(model: Adapter, seconds: float):
    """One timed pass = stream `seconds` of noise at batch 1 in 1 s blocks, from silence."""
    total = max(FS, round(seconds * FS))
    audio = 0.5 * torch.randn(total, generator=torch.Generator().manual_seed(0))
    if model.is_nam:
        # No stateful streaming in NAM's Python package: prepend rf-1 samples of history per block.
        padded = torch.cat([torch.zeros(model.rf - 1), audio])

        def one_pass() -> None:
            for i in range(0, total, FS):
                model(padded[i : i + FS + model.rf - 1].view(1, 1, -1))

    else:
        stream = StreamingWaveNet(model.module)

        def one_pass() -> None:
            stream.reset()
            for i in range(0, total, FS):
                stream.process(audio[i : i + FS])

    return one_pass, total / FS


class Best:
    """Least wall-clock and least process-CPU time over runs. On a shared machine other processes
    only ever add wall time; CPU time also excludes time spent descheduled."""

    def __init__(self) -> None:
        self.wall = self.cpu = float("inf")

    def time(self, fn) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        self.wall = min(self.wall, time.perf_counter() - wall)
        self.cpu = min(self.cpu, time.process_time() - cpu)


def compare(models: list[Adapter], args, peak1: float) -> list[dict]:
    """Measure all models of one preset with their timed runs interleaved, so that load from other
    processes hits them alike; keep the best run of each."""
    steps = [training_step_fn(m) for m in models]
    train = [Best() for _ in models]
    for _ in range(args.steps):
        for (step, _), best in zip(steps, train):
            best.time(step)
    passes = [streaming_pass_fn(m, args.rtf_seconds) for m in models]
    stream = [Best() for _ in models]
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for one_pass, _ in passes:
                one_pass()  # warm-up
            for _ in range(args.repeats):
                for (one_pass, _), best in zip(passes, stream):
                    best.time(one_pass)
    finally:
        torch.set_num_threads(old)
    rows = []
    for model, (_, step_flops), tr, (_, audio_s), st in zip(models, steps, train, passes, stream):
        macs = counted_macs_per_sample(model)
        rows.append({
            "params": sum(p.numel() for p in model.module.parameters()),
            "macs": macs,
            "train_sps": BATCH * SEGMENT / tr.wall,
            "train_sps_cpu": BATCH * SEGMENT / tr.cpu,  # per CPU-second, all threads together
            "train_util": step_flops / tr.cpu / 1e9 / peak1,  # per core
            "rtf": audio_s / st.wall,
            "rtf_cpu": audio_s / st.cpu,
            "stream_util": 2 * macs * FS * audio_s / st.cpu / 1e9 / peak1,
        })
    return rows


def _spin() -> None:
    while True:
        pass


def threads_table(presets: list[str], seconds: float, repeats: int, *, write: bool) -> None:
    """Streaming RTF at 1 thread vs torch's default, idle and beside one busy process per core."""
    import multiprocessing
    import statistics

    from ampmodel.streaming import render

    default = torch.get_num_threads()
    cores = os.cpu_count() or 1
    audio = (0.3 * torch.randn(int(seconds * FS))).numpy()
    nets = {name: from_preset(name).eval() for name in presets}
    rows = []
    for condition in ("idle", f"{cores} busy neighbours"):
        spinners = []
        if condition != "idle":
            ctx = multiprocessing.get_context("spawn")
            spinners = [ctx.Process(target=_spin, daemon=True) for _ in range(cores)]
            for proc in spinners:
                proc.start()
            time.sleep(1.0)
        try:
            for name, net in nets.items():
                times = {1: [], default: []}
                with torch.inference_mode():
                    render(net, audio[:FS], block_size=4096)  # warm-up
                    for _ in range(repeats):
                        for threads in times:  # interleaved: load changes hit both alike
                            torch.set_num_threads(threads)
                            start = time.perf_counter()
                            render(net, audio, block_size=4096)
                            times[threads].append(time.perf_counter() - start)
                rtf = {t: seconds / statistics.median(v) for t, v in times.items()}
                rows.append((condition, name, rtf[1], rtf[default]))
                print(f"{condition:<20}{name:<14}{rtf[1]:>10.1f}{rtf[default]:>10.1f}{rtf[1] / rtf[default]:>8.1f}x",
                      flush=True)
        finally:
            torch.set_num_threads(default)
            for proc in spinners:
                proc.terminate()
                proc.join()
    lines = [f"Streaming real-time factor (audio s / wall s, median of {repeats} interleaved passes of {seconds:g} s "
             f"of noise, 4096-sample blocks, `ampmodel.streaming.render`), one torch thread vs torch's default "
             f"({default}), on an idle machine and beside {cores} busy processes (one per core).", "",
             "| machine | model | RTF 1 thread | RTF default threads | 1 thread / default |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {c} | {n} | {a:.1f} | {b:.1f} | {a / b:.2f}x |" for c, n, a, b in rows]
    if write:
        from benchmarks.results_file import write_results

        print(f"written to {write_results('inference_threads', chr(10).join(lines) + chr(10))}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="WaveNet1,WaveNet2,WaveNet3")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per model (best of)")
    parser.add_argument("--threads", type=int, default=2, help="CPU training threads (0 = torch's default)")
    parser.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu",
                        help="devices of the by-device table, e.g. cpu,cuda (default: cpu, and cuda when present)")
    parser.add_argument("--batch-sweep", action="store_true", help="samples/s by batch size on each device")
    parser.add_argument("--sweep-preset", default="WaveNet3")
    parser.add_argument("--sweep-batches", default="16,32,64,128,256", help="batch sizes of --batch-sweep")
    parser.add_argument("--bf16", action="store_true", help="by-device table under bf16 autocast (train.precision bf16-mixed)")
    parser.add_argument("--trial", action="store_true",
                        help="time one trial of the main study end to end on each device (benchmarks/trial_speed.py)")
    parser.add_argument("--trial-minutes", type=float, default=0.0,
                        help="wall-clock cap of that trial's fitting (default: the study's trial_max_minutes)")
    parser.add_argument("--only-devices", action="store_true", help="skip the CPU table of ours vs NAM")
    parser.add_argument("--rtf-seconds", type=float, default=3.0, help="audio streamed per timed pass")
    parser.add_argument("--repeats", type=int, default=4, help="timed streaming passes per model (best of)")
    parser.add_argument("--no-nam", action="store_true")
    parser.add_argument("--quick", action="store_true", help="1 step, 1 s of audio, 1 repeat")
    parser.add_argument("--threads-table", action="store_true",
                        help="only the inference-threads table (1 thread vs torch's default, idle and busy), "
                             "written to benchmarks/results/inference_threads.md")
    parser.add_argument("--threads-presets", default="WaveNet3,nam-nano,nam-standard")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/results/ alone")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.rtf_seconds, args.repeats = 1, 1.0, 1
    if args.threads_table:
        threads_table(args.threads_presets.split(","), args.rtf_seconds, args.repeats,
                      write=not (args.no_write or args.quick))
        return
    if args.threads:
        torch.set_num_threads(args.threads)

    nam_available = False
    if not args.no_nam:
        try:
            import nam  # noqa: F401

            nam_available = True
        except ImportError as exc:
            print(f"neural-amp-modeler not importable ({exc}); showing ours only")

    threads = torch.get_num_threads()
    load = os.getloadavg()[0]
    peak1 = peak_gflops()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load:.1f} before the run")
    print(f"peak: {peak1:.1f} GFLOP/s per core (single-thread 2048^3 fp32 matmul, CPU time)")
    print(f"training: batch {BATCH} x {SEGMENT} output samples, fwd+bwd+Adam, {threads} threads, best of {args.steps}; "
          f"streaming: batch 1, 1 s blocks, 1 thread, {args.rtf_seconds:g} s audio, best of {args.repeats}; "
          "ours and NAM interleaved\n")

    presets = args.presets.split(",")
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    if not args.only_devices:
        ours_vs_nam(presets, args, peak1, nam_available)
    device_table(presets, devices, args.steps, threads, args.bf16)
    if args.batch_sweep:
        batch_sweep(args.sweep_preset, devices, args.steps, [int(b) for b in args.sweep_batches.split(",")])
    if args.trial:
        from benchmarks.trial_speed import time_trials

        time_trials(devices, max_minutes=args.trial_minutes or None)


def ours_vs_nam(presets: list[str], args, peak1: float, nam_available: bool) -> None:
    header = (f"{'model':<12}{'params':>8}{'MAC/smp':>9}{'train smp/s':>13}{'/cpu-s':>10}{'util':>7}"
              f"{'RTF':>8}{'RTF cpu':>9}{'util':>7}")
    print(header)
    print("-" * len(header))
    for name in presets:
        cfg = PRESETS[name]
        candidates = [Adapter(name, from_preset(name), cfg.receptive_field, is_nam=False)]
        if nam_available:
            nam_model = nam_wavenet(cfg)
            assert nam_model.receptive_field == cfg.receptive_field
            candidates.append(Adapter("  NAM", nam_model, cfg.receptive_field, is_nam=True))
        rows = compare(candidates, args, peak1)
        for model, r in zip(candidates, rows):
            print(f"{model.name:<12}{r['params']:>8,}{r['macs']:>9,.0f}{r['train_sps']:>13,.0f}{r['train_sps_cpu']:>10,.0f}"
                  f"{r['train_util']:>7.1%}{r['rtf']:>8.2f}{r['rtf_cpu']:>9.2f}{r['stream_util']:>7.1%}", flush=True)
        if nam_available:
            ours, theirs = rows
            ratio = {k: ours[k] / theirs[k] for k in ours}
            print(f"{'  ours/NAM':<12}{ratio['params']:>8.2f}{ratio['macs']:>9.2f}{ratio['train_sps']:>13.2f}"
                  f"{ratio['train_sps_cpu']:>10.2f}{'':>7}{ratio['rtf']:>8.2f}{ratio['rtf_cpu']:>9.2f}")
    print("\ntrain smp/s and RTF: wall clock; /cpu-s and RTF cpu: per second of process CPU time (robust to other\n"
          "load; equals wall for 1 thread on an idle machine). util = counted FLOPs per CPU-second / per-core peak.")


if __name__ == "__main__":
    main()
