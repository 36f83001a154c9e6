"""`ampstudy render` on files: output path and format checked before any work, the input never
overwritten, and long files rendered in bounded memory (streamed through render_blocks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from ampmodel.config import WaveNetConfig
from ampmodel.streaming import render
from ampmodel.wavenet import WaveNet
from ampstudy.cli import main
from training.model_io import load_model, save_model
from training.run_config import RunConfig

FS = 16000


@pytest.fixture
def model_dir(tmp_path):
    """An untrained unconditioned tiny WaveNet saved as a model directory (no training needed)."""
    torch.manual_seed(0)
    cfg = RunConfig(model=WaveNetConfig(channels=4, dilations=(1, 2, 4, 8, 16), kernel_size=2))
    return save_model(tmp_path / "model", WaveNet(cfg.model), cfg, {"sample_rate": FS})


def write_di(path, seconds, fs=FS, seed=0):
    rng = np.random.default_rng(seed)
    n = int(seconds * fs)
    with sf.SoundFile(path, "w", samplerate=fs, channels=1, format="WAV", subtype="FLOAT") as out:
        for start in range(0, n, 1 << 20):
            out.write((0.3 * rng.standard_normal(min(1 << 20, n - start))).clip(-0.9, 0.9).astype(np.float32))
    return path


def test_output_that_is_the_input_is_refused_and_the_input_kept(model_dir, tmp_path, monkeypatch, capsys):
    di = write_di(tmp_path / "di.wav", 0.3)
    original = di.read_bytes()
    os.symlink(di, tmp_path / "link.wav")
    os.link(di, tmp_path / "hard.wav")
    monkeypatch.chdir(tmp_path)
    for output in (str(di), "di.wav", "./sub/../di.wav", "link.wav", "hard.wav"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        assert main(["render", str(model_dir), str(di), output]) == 2, output
        err = capsys.readouterr().err
        assert "would overwrite it" in err and len(err.strip().splitlines()) == 1
    assert di.read_bytes() == original


def test_bad_paths_and_formats_end_in_one_line_before_loading_the_model(model_dir, tmp_path, capsys):
    """The model path is bogus: each error must come from a check that runs before the model is loaded."""
    di = write_di(tmp_path / "di.wav", 0.3)
    write_di(tmp_path / "48k.wav", 0.3, fs=48000)
    sf.write(tmp_path / "stereo.wav", np.zeros((100, 2), np.float32) + 0.1, FS)
    cases = [([str(di), str(tmp_path)], "is a folder; give the output file name"),
             ([str(tmp_path / "stereo.wav"), str(tmp_path / "o.wav")], "mix down to mono"),
             ([str(tmp_path / "missing.wav"), str(tmp_path / "o.wav")],
              "no such audio file; fix the path in the command's input_wav argument"),
             ([str(di), "/proc/o.wav"], "/proc/o.wav: cannot write in /proc"),  # root too: tried, not guessed
             ([str(di), str(tmp_path / "no" / "such" / "o.wav")],
              f"the folder {tmp_path / 'no' / 'such'} does not exist; create it"),
             ([str(di), str(tmp_path / "o.wav"), "--block-seconds", "nan"], "nan is not a finite number"),
             ([str(di), str(tmp_path / "o.wav"), "--block-seconds", "0"], "must be > 0")]
    for args, message in cases:
        assert main(["render", str(tmp_path / "no-such-model"), *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert main(["render", str(model_dir), str(tmp_path / "48k.wav"), str(tmp_path / "o.wav")]) == 2
    assert "resample to 16000 Hz" in capsys.readouterr().err
    assert not (tmp_path / "o.wav").exists() and not list(tmp_path.glob(".o.wav*"))
    assert not (tmp_path / "no").exists()  # no folder tree made for a mistyped path


def test_a_registry_model_outside_any_store_is_one_line_and_creates_no_store(tmp_path, monkeypatch, capsys):
    """Issue 22 #11: rendering models:/... in a folder without mlruns/ created an empty store there."""
    di = write_di(tmp_path / "di.wav", 0.3)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for argv in (["render", "models:/bassman-wavenet@champion", str(di), "o.wav"],
                 ["export", "models:/bassman-wavenet@champion", "o.nam"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "no MLflow store here" in err and "MLFLOW_TRACKING_URI" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["di.wav"]


def test_a_render_stopped_by_sigterm_leaves_no_partial_file(model_dir, tmp_path):
    di = write_di(tmp_path / "di.wav", 30.0)
    out = tmp_path / "out.wav"
    render = subprocess.Popen([sys.executable, "-m", "ampstudy.cli", "render", str(model_dir), str(di), str(out),
                               "--block-seconds", "0.001"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.wav.*.tmp")):  # writing has begun
        assert render.poll() is None and time.monotonic() < deadline, render.communicate()
        time.sleep(0.02)
    render.send_signal(signal.SIGTERM)
    err = render.communicate(timeout=60)[1]
    assert render.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines() == ["ampstudy: stopped by SIGTERM: nothing was written"], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["di.wav", "model"]


def test_render_runs_on_one_torch_thread_unless_told(model_dir, tmp_path):
    di = write_di(tmp_path / "di.wav", 0.1)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(["render", str(model_dir), str(di), str(tmp_path / "a.wav")]) == 0
        assert torch.get_num_threads() == 1
        assert main(["render", str(model_dir), str(di), str(tmp_path / "b.wav"), "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# VmHWM, not ru_maxrss: Linux carries the forking parent's peak RSS over exec into ru_maxrss.
PEAK_RSS = """
import sys
from training.render import render_file
render_file(sys.argv[1], sys.argv[2], sys.argv[3], {}, 0.5)
print(next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def peak_rss(model_dir, wav, out) -> int:
    # One thread and one malloc arena: a second thread's arena appears at random under CPU load.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "1"}
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, str(model_dir), str(wav), str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return int(done.stdout.split()[-1])


def test_long_file_renders_in_bounded_memory(model_dir, tmp_path):
    """Peak RSS grows by less than one float32 copy of the input between a 1 s and a 4 min file;
    reading the whole file (and collecting the output) needs at least 12 bytes per sample."""
    samples = 4 * 60 * FS
    short = peak_rss(model_dir, write_di(tmp_path / "short.wav", 1.0), tmp_path / "short-out.wav")
    long = peak_rss(model_dir, write_di(tmp_path / "long.wav", samples / FS), tmp_path / "long-out.wav")
    assert sf.info(str(tmp_path / "long-out.wav")).frames == samples
    # Streamed block by block, yet the same samples as one render of the whole signal.
    x, _ = sf.read(tmp_path / "short.wav", dtype="float32")
    y, rate = sf.read(tmp_path / "short-out.wav", dtype="float32")
    assert rate == FS and np.allclose(y, render(load_model(model_dir).net, x, block_size=4096), atol=1e-6)
    assert long - short < 4 * samples, f"peak RSS grew {(long - short) / 2**20:.0f} MiB for {samples} samples"


def test_device_option_runs_the_one_render_path_and_refuses_a_missing_gpu(model_dir, tmp_path, capsys):
    di = write_di(tmp_path / "di.wav", 0.2)
    assert main(["render", str(model_dir), str(di), str(tmp_path / "cpu.wav")]) == 0  # CPU by default
    assert main(["render", str(model_dir), str(di), str(tmp_path / "auto.wav"), "--device", "auto"]) == 0
    cpu, _ = sf.read(tmp_path / "cpu.wav", dtype="float32")
    auto, _ = sf.read(tmp_path / "auto.wav", dtype="float32")
    assert np.allclose(cpu, auto, atol=1e-5)  # cuda where present, the same samples
    if not torch.cuda.is_available():
        capsys.readouterr()
        assert main(["render", str(model_dir), str(di), str(tmp_path / "gpu.wav"), "--device", "cuda"]) == 2
        assert "--device: 'cuda' but torch sees no CUDA GPU here" in capsys.readouterr().err
        assert not (tmp_path / "gpu.wav").exists()
