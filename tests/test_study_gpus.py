"""`study run --workers N` on a machine with GPUs: each worker its own GPU (CUDA_VISIBLE_DEVICES set before
it starts), or several per GPU when asked; refused before any work otherwise. No GPU needed: torch's
device count is patched where the test needs GPUs."""

from __future__ import annotations

import multiprocessing
import os
import tomllib

import pytest
import torch

from ampstudy.cli import main
from foundation.errors import AmpStudyError
from studies import runner
from studies.gpus import VISIBLE, assign_gpus, child_environment, describe, visible_gpus
from studies.spec import load_study_spec, study_spec_from_mapping
from tests.conftest import TINY_STUDY
from tests.spawn_probe import report_env


def test_each_worker_gets_its_own_gpu_or_shares_when_asked():
    assert visible_gpus({}, count=0) == [] and visible_gpus({}, count=2) == ["0", "1"]
    assert visible_gpus({VISIBLE: "3, 5"}, count=2) == ["3", "5"]
    assert visible_gpus({VISIBLE: "GPU-aa,GPU-bb,7"}, count=1) == ["GPU-aa"]  # CUDA stops at a bad entry
    assert visible_gpus({VISIBLE: "0"}, count=0) == []  # a CPU build of torch: nothing to hand out
    assert assign_gpus(3, []) == [None, None, None]
    assert assign_gpus(2, ["3", "5", "6"]) == ["3", "5"]
    assert assign_gpus(4, ["0", "1"], share=True) == ["0", "1", "0", "1"]
    assert describe(["0", "1", "0", "1"]) == "workers 0, 2 on GPU 0; workers 1, 3 on GPU 1"
    with pytest.raises(AmpStudyError, match="--workers 3 but this machine has 2 GPU.*use --workers 2, or "
                                            "--share-gpus to run 2 workers per GPU"):
        assign_gpus(3, ["0", "1"])


def test_spawned_workers_start_with_their_gpu_in_the_environment():
    context = multiprocessing.get_context("spawn")  # as the runner starts workers
    queue, seen, before = context.Queue(), [], os.environ.get(VISIBLE)
    for gpu in ["3", None]:
        with child_environment(VISIBLE, gpu):
            process = context.Process(target=report_env, args=(VISIBLE, queue))
            process.start()
        process.join(60)
        seen.append(queue.get(timeout=10))
    assert seen == ["3", before] and os.environ.get(VISIBLE) == before


def test_more_workers_than_gpus_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(VISIBLE, "4,7")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert main(["study", "run", str(TINY_STUDY), "--workers", "3"]) == 2
    err = capsys.readouterr().err
    assert "--workers 3 but this machine has 2 GPU(s) (CUDA_VISIBLE_DEVICES=4,7)" in err and "--share-gpus" in err
    assert not (tmp_path / "mlruns").exists()  # no storage, no tracking store, no data
    spec = load_study_spec(TINY_STUDY)
    assert runner.worker_gpus(spec, 3, share_gpus=True) == ["4", "7", "4"]
    cpu_study = tomllib.loads(TINY_STUDY.read_text())
    cpu_study["base"]["train"]["accelerator"] = "cpu"
    assert runner.worker_gpus(study_spec_from_mapping(cpu_study), 3) == [None] * 3


def test_a_study_that_insists_on_cuda_stops_before_any_work_without_a_gpu(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = tmp_path / "gpu.toml"
    path.write_text(TINY_STUDY.read_text().replace("[base.train]\n", '[base.train]\naccelerator = "cuda"\n', 1))
    assert main(["study", "run", str(path)]) == 2
    assert "gpu.toml: base.train.accelerator: 'cuda' but torch sees no CUDA GPU here" in capsys.readouterr().err
    assert not (tmp_path / "mlruns").exists()

