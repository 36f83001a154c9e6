"""A dataset's files are checked against its manifest, repaired from the chunk cache by `ampstudy data`,
and built once when two processes ask for it (real ngspice, through a PATH shim that counts its runs)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from datamodules import dataset as ds
from datamodules.config import AudioConfig, DataConfig, KnobsConfig, PotSettings, SimulationConfig
from datamodules.dataset_plan import plan_dataset
from datamodules.spice import ngspice_path

ROOT = Path(__file__).resolve().parents[1]
FS = 16000
TINY = dict(sample_rate=FS, workers=2, seed=0,
            knobs=KnobsConfig(settings=(PotSettings(treble=0.0), PotSettings(volume=0.8))),
            audio=AudioConfig(corpus_seconds=0.6, region_seconds=0.1),
            simulation=SimulationConfig(oversampling=2, chunk_seconds=0.3, warmup_seconds=0.05))


def config_source(data_dir: Path) -> str:
    return ("from datamodules.config import AudioConfig, DataConfig, KnobsConfig, PotSettings, SimulationConfig\n"
            f"cfg = DataConfig(data_dir={str(data_dir)!r}, sample_rate={FS}, workers=2, seed=0, "
            "knobs=KnobsConfig(settings=(PotSettings(treble=0.0), PotSettings(volume=0.8))), "
            "audio=AudioConfig(corpus_seconds=0.6, region_seconds=0.1), "
            "simulation=SimulationConfig(oversampling=2, chunk_seconds=0.3, warmup_seconds=0.05))\n")


@pytest.fixture
def counted_ngspice(tmp_path) -> tuple[dict, Path]:
    """An environment whose `ngspice` logs every transient run to a file, then runs the real one.
    While a file `gate_closed` exists beside the log, every run waits for it to go."""
    shim_dir, log = tmp_path / "bin", tmp_path / "transient_runs.log"
    shim_dir.mkdir()
    shim = shim_dir / "ngspice"
    shim.write_text(f"#!/bin/sh\nwhile [ -e {tmp_path / 'gate_closed'} ]; do sleep 0.05; done\n"
                    f"if grep -q '^\\.tran' deck.cir 2>/dev/null; then echo run >> {log}; fi\n"
                    f"exec {ngspice_path()} \"$@\"\n")
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{shim_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    return env, log


def runs(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[DataConfig, Path]:
    cfg = DataConfig(data_dir=str(tmp_path_factory.mktemp("data")), **TINY)
    return cfg, ds.prepare_dataset(cfg, progress=False)


def test_the_manifest_lists_every_file_with_its_size_and_sha256(built):
    _, path = built
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == 5 and manifest["simulation"]["oversampling"] == 2
    files = {p.name for p in path.iterdir()} - {"manifest.json"}
    assert set(manifest["files"]) == files
    for name, record in manifest["files"].items():
        assert record == ds.file_record(path / name)


def damaged_copy(built, tmp_path) -> tuple[DataConfig, Path]:
    """The built dataset and its chunk cache copied to a new data_dir (same hash: data_dir is not content)."""
    cfg, path = built
    shutil.copytree(Path(cfg.data_dir), tmp_path / "data")
    copy = DataConfig(**{**TINY, "data_dir": str(tmp_path / "data")})
    assert plan_dataset(copy).path == tmp_path / "data" / path.name
    return copy, tmp_path / "data" / path.name


def test_a_corrupted_target_is_refused_naming_the_file_and_the_repair(built, tmp_path):
    cfg, path = damaged_copy(built, tmp_path)
    target = path / "target_1.wav"
    y, fs = sf.read(target, dtype="float32")
    y[1000:1064] = 1e30  # same length, same size: only the hash tells
    sf.write(target, y, fs, subtype="FLOAT")
    with pytest.raises(ds.DamagedDataset) as err:
        ds.load_dataset(path)
    message = str(err.value)
    assert "\n" not in message and "target_1.wav" in message and "differs" in message
    assert f"ampstudy data --dataset {path}" in message
    with pytest.raises(ds.DamagedDataset, match="target_1.wav"):
        ds.prepare_dataset(cfg, progress=False)  # a run's prepare_data refuses it too, it does not train on it


def test_ampstudy_data_repairs_a_truncated_file_from_the_chunk_cache(built, tmp_path, counted_ngspice):
    env, log = counted_ngspice
    _, original = built
    cfg, path = damaged_copy(built, tmp_path)
    target = path / "target_0.wav"
    target.write_bytes(target.read_bytes()[:-400])
    with pytest.raises(ds.DamagedDataset, match=r"target_0.wav: \d+ bytes where the manifest says"):
        ds.load_dataset(path)
    proc = subprocess.run([sys.executable, "-m", "ampstudy.cli", "data", "--dataset", str(path)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "target_0.wav" in proc.stderr and "rebuilding the dataset from the chunk cache" in proc.stderr
    assert runs(log) == 0  # every chunk came from the cache
    repaired, reference = (sf.read(p / "target_0.wav", dtype="float32")[0] for p in (path, original))
    np.testing.assert_array_equal(repaired, reference)  # the same samples (the wav's PEAK chunk has a time stamp)
    data = ds.load_dataset(path)
    assert np.isfinite(data.targets[0]).all()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # nothing set aside is left


def test_two_processes_asking_for_one_dataset_simulate_each_chunk_once(tmp_path, counted_ngspice):
    env, log = counted_ngspice
    data_dir = tmp_path / "data"
    script = config_source(data_dir) + ("from datamodules.dataset import prepare_dataset\n"
                                        "print(prepare_dataset(cfg, progress=False))\n")
    cfg = DataConfig(**{**TINY, "data_dir": str(data_dir)})
    lock = data_dir / "locks" / f"{plan_dataset(cfg).key}.lock"
    gate = tmp_path / "gate_closed"
    gate.touch()  # the first build holds the lock, its ngspice runs waiting, until the second says it waits
    first = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not held(lock):  # the first one is building: now the second asks
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.05)
    second_err = tmp_path / "second.err"
    with open(second_err, "w") as err_file:
        second = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=err_file, text=True)
    while "waiting" not in second_err.read_text():
        assert time.monotonic() < deadline and second.poll() is None, second_err.read_text()
        time.sleep(0.05)
    gate.unlink()
    (out1, err1), (out2, _) = first.communicate(timeout=300), second.communicate(timeout=300)
    err2 = second_err.read_text()
    assert first.returncode == 0 and second.returncode == 0, err1 + err2
    assert out1 == out2 and Path(out1.strip()).is_dir()
    assert "another process is building dataset" in err2 and "waiting" in err2
    chunks = len(list((data_dir / "chunks").glob("*.npy")))
    assert chunks == 2 * 2 and runs(log) == chunks  # two settings x two chunks, each simulated once


def held(lock: Path) -> bool:
    if not lock.exists():
        return False
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def test_a_dataset_built_before_checksums_still_loads_where_it_is_referenced(built, tmp_path):
    _, path = damaged_copy(built, tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    for key in ("files", "simulation"):
        del manifest[key]
    manifest["format"] = 4
    (path / "manifest.json").write_text(json.dumps(manifest))
    data = ds.load_dataset(path)  # nothing to check it against: read as before
    assert len(data.targets) == 2 and data.manifest["format"] == 4
