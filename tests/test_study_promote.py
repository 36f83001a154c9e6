"""Promotion to the MLflow Model Registry: champion only ever improves, racing promotions leave a
consistent registry, and the champion loads as a pyfunc model that renders audio."""

from __future__ import annotations

import math
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from optuna.trial import TrialState

from studies.promote import ALIAS, promote
from studies.runner import run_study
from studies.spec import load_study_spec
from tests.conftest import write_study_file
from training import tracking

MODEL = "bassman-wavenet"


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory, study_data_dir):
    """A tiny study without pruning (so several trials complete), run once for this module."""
    root = tmp_path_factory.mktemp("promote")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        path = write_study_file(root / "s.toml", study_data_dir, name="promo", n_trials=3,
                                replace={'[pruner]\nkind = "median"': '[pruner]\nkind = "none"'})
        study = run_study(load_study_spec(path), report=False)
    complete = [t.number for t in study.get_trials(states=(TrialState.COMPLETE,))]
    assert len(complete) >= 2, "need two complete trials to compare"
    return {"root": root, "path": path, "complete": complete}


@pytest.fixture
def in_study_dir(finished_study, monkeypatch):
    monkeypatch.chdir(finished_study["root"])
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return finished_study


def registry():
    return tracking.client(tracking.default_tracking_uri())


def champion():
    version = registry().get_model_version_by_alias(MODEL, ALIAS)
    return str(version.version), float(version.tags["test_esr"])


def test_champion_moves_only_to_a_better_model(in_study_dir):
    spec = load_study_spec(in_study_dir["path"])
    best_so_far = math.inf
    versions_by_trial: dict[int, str] = {}
    for number in in_study_dir["complete"] + in_study_dir["complete"][:1]:  # the last one repeats a promotion
        result = promote(spec, trial_number=number)
        # Promoting the same trial again reuses its version instead of registering a copy.
        assert versions_by_trial.setdefault(number, result.version) == result.version
        assert result.moved == (result.test_esr < best_so_far)
        best_so_far = min(best_so_far, result.test_esr)
        version, esr = champion()
        assert esr == best_so_far and version == result.champion_after
        tags = registry().get_model_version(MODEL, result.version).tags
        assert tags["study"] == "promo" and tags["trial"] == str(number) and tags["data_hash"]
        assert float(tags["macs_per_sample"]) > 0 and "rtf" in tags


def test_racing_promotions_leave_the_best_champion(in_study_dir):
    path, numbers = in_study_dir["path"], in_study_dir["complete"][:2]
    before = {v.version for v in registry().search_model_versions(f"name = '{MODEL}'")}
    racers = [subprocess.Popen([sys.executable, "-m", "ampstudy.cli", "promote", str(path), "--trial", str(n)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for n in numbers]
    outputs = [r.communicate(timeout=300)[0] for r in racers]
    assert [r.returncode for r in racers] == [0, 0], outputs
    versions = registry().search_model_versions(f"name = '{MODEL}'")
    trials = [v.tags["trial"] for v in versions]
    assert all(trials.count(str(n)) == 1 for n in numbers)  # one version per trial, never a copy
    assert {v.version for v in versions} >= before
    best = min(float(v.tags["test_esr"]) for v in versions)
    assert champion()[1] == best


def test_champion_loads_as_pyfunc_and_renders_audio(in_study_dir):
    import torch

    from ampmodel.streaming import StreamingWaveNet
    from training.model_io import resolve_model

    tracking.client(tracking.default_tracking_uri())
    if not registry().search_model_versions(f"name = '{MODEL}'"):
        promote(load_study_spec(in_study_dir["path"]))
    amp = mlflow.pyfunc.load_model(f"models:/{MODEL}@{ALIAS}")
    rng = np.random.default_rng(0)
    audio = (0.2 * rng.standard_normal(5000)).astype(np.float32)
    out = amp.predict(audio)
    assert out.shape == audio.shape and out.dtype == np.float32 and np.all(np.isfinite(out))
    knobs = {"volume": 0.8, "treble": 0.7, "bass": 0.3, "middle": 0.6}
    from_frame = amp.predict(pd.DataFrame({"audio": audio, **knobs}))
    from_params = amp.predict(audio, params=knobs)
    np.testing.assert_allclose(from_frame, from_params, atol=1e-6)
    # Same numbers as ampstudy's streaming renderer on the same registered model.
    loaded = resolve_model(f"models:/{MODEL}@{ALIAS}")
    controls = torch.tensor(list(knobs.values())) if loaded.conditioned else None
    stream = StreamingWaveNet(loaded.net)
    with torch.inference_mode():
        streamed = torch.cat([stream.process(torch.from_numpy(audio[i:i + 1024]), controls)
                              for i in range(0, len(audio), 1024)]).numpy()
    np.testing.assert_allclose(from_params, streamed, atol=1e-4)
    with pytest.raises(Exception, match="1-D"):
        amp.predict(np.zeros((2, 3), np.float32))
