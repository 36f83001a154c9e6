"""Promotion to the MLflow Model Registry: champion only ever improves, racing promotions leave a
consistent registry. (The registered model itself: tests/test_registry_model.py.)"""

from __future__ import annotations

import math
import subprocess
import sys

from studies.promote import ALIAS, promote
from studies.spec import load_study_spec
from training import tracking

MODEL = "bassman-wavenet"


def registry():
    return tracking.client(tracking.default_tracking_uri())


def champion():
    version = registry().get_model_version_by_alias(MODEL, ALIAS)
    return str(version.version), float(version.tags["test_esr"])


def champion_esr_or_inf() -> float:
    """The current champion's test ESR (another test of this store may have promoted one), else inf."""
    from mlflow.exceptions import MlflowException

    try:
        return champion()[1]
    except MlflowException:  # no such model or alias yet
        return math.inf


def test_champion_moves_only_to_a_better_model(in_study_dir):
    spec = load_study_spec(in_study_dir["path"])
    best_so_far = champion_esr_or_inf()
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
    existing = registry().search_model_versions(f"name = '{MODEL}'")
    before, registered = {v.version for v in existing}, {v.tags["trial"] for v in existing}
    racers = [subprocess.Popen([sys.executable, "-m", "ampstudy.cli", "promote", str(path), "--trial", str(n)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for n in numbers]
    outputs = [r.communicate(timeout=300)[0] for r in racers]
    assert [r.returncode for r in racers] == [0, 0], outputs
    versions = registry().search_model_versions(f"name = '{MODEL}'")
    trials = [v.tags["trial"] for v in versions]
    assert all(trials.count(str(n)) == 1 for n in numbers)  # one version per trial, never a copy
    added = {v.version for v in versions} - before
    assert len(added) == sum(str(n) not in registered for n in numbers)  # exactly the trials not yet registered
    best = min(float(v.tags["test_esr"]) for v in versions)
    assert champion()[1] == best


def test_a_champion_scored_by_the_former_esr_is_re_evaluated(in_study_dir, capsys):
    """A champion promoted before the typical-setting ESR carries a pooled test_esr and no
    esr_definition tag: its number must not decide against today's numbers."""
    spec = load_study_spec(in_study_dir["path"])
    promote(spec, trial_number=in_study_dir["complete"][0])  # make sure there is a champion
    version, real = champion()
    client = registry()
    reigning = client.get_model_version(MODEL, version).tags["trial"]
    client.delete_model_version_tag(MODEL, version, "esr_definition")
    client.set_model_version_tag(MODEL, version, "test_esr", "1e-09")  # would block every challenger
    challenger = next(n for n in in_study_dir["complete"] if str(n) != reigning)
    capsys.readouterr()
    result = promote(spec, trial_number=challenger)
    assert "by another ESR" in capsys.readouterr().out
    assert result.moved == (result.test_esr < real)
