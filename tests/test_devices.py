"""Training on the best device without needing one: what "auto" resolves to, config validation, no host
sync per training step, and float32 evaluation under mixed precision. Nothing here needs a GPU; where
torch could see one, the expectations follow torch.cuda.is_available()."""

from __future__ import annotations

import tomllib

import pytest
import torch

from foundation.errors import ConfigError, TrainingDiverged
from studies.fingerprint import spec_fingerprint
from studies.spec import load_study_spec, study_spec_from_mapping
from tests.conftest import TINY_STUDY
from training.devices import DEVICE_PROFILES, placement
from training.evaluate import predict_span
from training.lightning_module import FINITE_CHECK_STEPS, AmpModule
from training.run_config import TrainConfig, run_config_from_mapping


def test_auto_trains_on_cuda_only_when_torch_sees_a_gpu(monkeypatch):
    here = placement(TrainConfig())
    assert here.accelerator == ("cuda" if torch.cuda.is_available() else "cpu")
    assert (here.batch_size, here.segment_samples) == DEVICE_PROFILES[here.accelerator]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert placement(TrainConfig()) .accelerator == "cpu" and placement(TrainConfig()).batch_size == 16
    assert DEVICE_PROFILES["cpu"] == (16, 8192)  # what every run trained with before devices existed
    with pytest.raises(ConfigError, match="train.accelerator: 'cuda' but torch sees no CUDA GPU"):
        placement(TrainConfig(accelerator="cuda"))
    with pytest.raises(ConfigError, match="train.precision: '16-mixed' needs a CUDA GPU and this run trains on the CPU"):
        placement(TrainConfig(precision="16-mixed"))  # "auto" found no GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu = placement(TrainConfig(precision="16-mixed"))
    assert (gpu.accelerator, gpu.batch_size, gpu.segment_samples) == ("cuda", *DEVICE_PROFILES["cuda"])
    assert placement(TrainConfig(accelerator="cpu")).accelerator == "cpu"
    fixed = placement(TrainConfig(batch_size=8, segment_samples=2048))  # numbers win over the profile
    assert (fixed.batch_size, fixed.segment_samples) == (8, 2048)
    assert run_config_from_mapping({"train": {"precision": 32}}).train.precision == "32"


def test_accelerator_and_precision_are_plumbing_and_batch_size_stays_searchable():
    table = tomllib.loads(TINY_STUDY.read_text())
    base = load_study_spec(TINY_STUDY)
    table["base"]["train"].update(accelerator="cpu", precision="bf16-mixed")
    assert spec_fingerprint(study_spec_from_mapping(table)) == spec_fingerprint(base)  # CPU and GPU machines mix
    table["space"]["train"]["batch_size"] = {"low": 2, "high": 8}
    assert any(p.name == "train.batch_size" and p.kind == "int" for p in study_spec_from_mapping(table).space)
    table["space"]["train"]["precision"] = {"choices": ["32", "bf16-mixed"]}
    with pytest.raises(ConfigError, match="space.train.precision: not a hyperparameter"):
        study_spec_from_mapping(table)


def tiny_module() -> AmpModule:
    cfg = run_config_from_mapping({"model": {"channels": 2, "dilations": "1..4", "conditioning": "film",
                                             "film_hidden": 2},
                                   "train": {"loss": {"pre_emphasis": 0.0, "reference": "setting"}}})
    return AmpModule(cfg, groups=["train"], reference=[0.04])  # a buffer: moves to the device with the module


def batch_of(module: AmpModule, value: float = 0.1) -> dict[str, torch.Tensor]:
    rf = module.net.receptive_field
    return {"input": torch.full((2, 1, 64 + rf - 1), value), "target": torch.full((2, 1, 64), 0.2),
            "controls": torch.full((2, 4), 0.5), "setting": torch.zeros(2, dtype=torch.long)}


def test_a_training_step_never_waits_for_the_device_and_divergence_is_still_named():
    # On the meta device every host read of a value raises, as it would stall a GPU.
    module = tiny_module().to("meta")
    for step in range(3):
        module.training_step({k: v.to("meta") for k, v in batch_of(module).items()}, step)
    module = tiny_module()
    for step in range(4):
        module.training_step(batch_of(module, float("nan") if step >= 2 else 0.1), step)
    with pytest.raises(TrainingDiverged, match="training loss became nan at step 2; lower train.learning_rate"):
        module.check_finite()
    assert FINITE_CHECK_STEPS > 1
    module.on_train_batch_end(None, None, 0)  # not a checking step: nothing read, no error yet
    with pytest.raises(TrainingDiverged):
        module.on_validation_epoch_start()  # before a nan validation ESR reaches early stopping


def test_evaluation_is_float32_inside_a_mixed_precision_autocast():
    torch.manual_seed(0)
    module = tiny_module()
    batch = {k: v[:1] for k, v in batch_of(module).items()}
    batch["input"] = 0.5 * torch.randn_like(batch["input"])
    exact = predict_span(module.net, batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # Lightning validates inside the training precision
        assert module.net.embed_input(batch["input"], batch["controls"]).dtype == torch.bfloat16
        inside = predict_span(module.net, batch)
    assert inside.dtype == torch.float32 and torch.equal(inside, exact)
