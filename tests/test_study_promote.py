"""Promotion to the MLflow Model Registry: the champion moves only past the gate (better by a margin,
not worse at its worst setting), an unevaluable champion blocks, racing promotions leave a
consistent registry. (The registered model itself: tests/test_registry_model.py.)"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from foundation.errors import AmpStudyError
from studies.champion_gate import verdict
from studies.promote import ALIAS, TEST_USES_TAG, promote
from studies.spec import load_study_spec
from training import tracking

MODEL = "bassman-wavenet"
TEST_ESR = "test_esr_tail_aware"


def registry():
    return tracking.client(tracking.default_tracking_uri())


def champion():
    version = registry().get_model_version_by_alias(MODEL, ALIAS)
    return str(version.version), float(version.tags[TEST_ESR])


def champion_esr_or_inf() -> float:
    """The current champion's test ESR (another test of this store may have promoted one), else inf."""
    from mlflow.exceptions import MlflowException

    try:
        return champion()[1]
    except MlflowException:  # no such model or alias yet
        return math.inf


def test_champion_moves_only_to_a_better_model(in_study_dir):
    spec = load_study_spec(in_study_dir["path"])
    reigning = champion_esr_or_inf()
    versions_by_trial: dict[int, str] = {}
    for number in in_study_dir["complete"] + in_study_dir["complete"][:1]:  # the last one repeats a promotion
        result = promote(spec, trial_number=number, margin=0.0)
        # Promoting the same trial again reuses its version instead of registering a copy.
        assert versions_by_trial.setdefault(number, result.version) == result.version
        assert not result.moved or result.test_esr < reigning  # never to a worse model
        reigning = result.test_esr if result.moved else reigning
        version, esr = champion()
        assert version == result.champion_after and (not result.moved or esr == result.test_esr)
        tags = registry().get_model_version(MODEL, result.version).tags
        assert tags["study"] == "promo" and tags["trial"] == str(number) and tags["data_hash"]
        assert float(tags["macs_per_sample"]) > 0 and "rtf" in tags
        for key in ("test_esr_geomean_floored", "test_esr_mean_scored_settings", "test_esr_worst_scored_setting"):
            assert float(tags[key]) > 0, key
    uses = registry().get_registered_model(MODEL).tags[f"{TEST_USES_TAG}{tags['data_hash']}"]
    assert int(uses) >= len(in_study_dir["complete"]) + 1  # every promotion above looked at the test split


def test_racing_promotions_leave_a_consistent_registry(in_study_dir):
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
    assert champion()[0] in {str(v.version) for v in versions}


def test_a_champion_is_re_evaluated_never_trusted_by_its_tags(in_study_dir, capsys):
    """A champion's tags (a number from another ESR definition, or a stale one) never decide: it is
    evaluated on the same test split by the same code as the challenger."""
    spec = load_study_spec(in_study_dir["path"])
    promote(spec, trial_number=in_study_dir["complete"][0])  # make sure there is a champion
    version, real = champion()
    client = registry()
    reigning = client.get_model_version(MODEL, version).tags["trial"]
    client.delete_model_version_tag(MODEL, version, "esr_definition")
    client.set_model_version_tag(MODEL, version, TEST_ESR, "1e-09")  # would block every challenger
    challenger = next(n for n in in_study_dir["complete"] if str(n) != reigning)
    capsys.readouterr()
    result = promote(spec, trial_number=challenger, margin=0.0)
    assert f"evaluating champion v{version}" in capsys.readouterr().out
    assert not result.moved or result.test_esr < real


def test_an_unevaluable_champion_blocks_the_alias_unless_told(in_study_dir, capsys):
    """A champion whose files are gone cannot be compared: the alias stays, promote fails with one
    line; --replace-unevaluable-champion moves it on purpose."""
    import shutil
    from urllib.parse import unquote, urlparse

    import mlflow

    from training.mlflow_model import log_amp_model
    from training.model_io import downloaded_model_dir

    spec = load_study_spec(in_study_dir["path"])
    name = "unevaluable-champion"
    client = registry()
    experiment = client.get_experiment_by_name("tiny-study").experiment_id
    trial_run = client.search_runs([experiment], "tags.`ampstudy.role` = 'trial'", max_results=1)[0].info.run_id
    scratch = client.create_run(experiment, run_name="a champion whose files get lost").info.run_id
    with downloaded_model_dir(f"runs:/{trial_run}/model") as directory:
        model_uri = log_amp_model(scratch, directory)  # a copy: the study's own models stay intact
    lost = mlflow.register_model(model_uri, name).version
    client.set_registered_model_alias(name, ALIAS, lost)
    location = client.get_logged_model(model_uri.removeprefix("models:/")).artifact_location
    shutil.rmtree(unquote(urlparse(location).path))  # the champion's files are gone
    with pytest.raises(AmpStudyError, match=f"'{ALIAS}' stays v{lost}: it cannot be evaluated.*"
                                            "--replace-unevaluable-champion"):
        promote(spec, trial_number=in_study_dir["complete"][0], model_name=name)
    assert str(client.get_model_version_by_alias(name, ALIAS).version) == str(lost)
    result = promote(spec, trial_number=in_study_dir["complete"][0], model_name=name, replace_unevaluable=True)
    assert result.moved and str(client.get_model_version_by_alias(name, ALIAS).version) == result.version


def scored(per_setting: list[float], tail_aware: float | None = None) -> dict:
    """evaluate_net's numbers for a split with these per-setting ESRs (the gate's input)."""
    from ampmodel.metrics import AUDIBILITY_FLOOR_ESR

    from tests.test_verdicts import accumulator

    acc = accumulator(per_setting)
    return {"esr_tail_aware": acc.tail_aware() if tail_aware is None else tail_aware,
            "esr_geomean_floored": acc.geometric_mean(floor=AUDIBILITY_FLOOR_ESR),
            "esr_worst_scored_setting": acc.worst_setting(), "per_scored_setting": acc.per_setting()}


def test_the_gate_wants_a_margin_no_new_broken_setting_and_most_settings():
    champion_numbers = scored([0.05] * 10)
    assert verdict(scored([0.03] * 10), champion_numbers).moves
    assert not verdict(scored([0.048] * 10), champion_numbers).moves  # within seed noise
    assert "margin" in verdict(scored([0.048] * 10), champion_numbers).reason
    # One catastrophic setting blocks it even when the number it ranks by were better.
    broken = scored([0.01] * 9 + [35.0], tail_aware=0.02)
    blocked = verdict(broken, champion_numbers)
    assert not blocked.moves and "worse at its worst knob setting" in blocked.reason
    # Better on average through two settings, worse at most others: not a better amp.
    even = scored([0.05] * 9 + [0.08])
    lopsided = scored([0.0011, 0.0011] + [0.055] * 7 + [0.07])
    assert lopsided["esr_tail_aware"] < even["esr_tail_aware"] / 1.2
    assert not verdict(lopsided, even).moves
    assert "worse at most knob settings" in verdict(lopsided, even).reason
