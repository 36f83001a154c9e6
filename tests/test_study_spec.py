"""Study files are validated on load, with errors naming the field, before any work starts."""

from __future__ import annotations

import tomllib

import pytest

from ampstudy.cli import main
from foundation.errors import ConfigError
from studies.space import apply_params, stack_shape
from studies.spec import load_study_spec, study_spec_from_mapping
from tests.conftest import REPO, TINY_STUDY


def tiny_table() -> dict:
    return tomllib.loads(TINY_STUDY.read_text())


def error_of(table: dict) -> str:
    with pytest.raises(ConfigError) as info:
        study_spec_from_mapping(table)
    return str(info.value)


@pytest.mark.parametrize("path", ["studies/tiny.toml", "studies/bassman_wavenet.toml", "studies/nam_wavenet.toml"])
def test_shipped_study_files_load(path):
    spec = load_study_spec(REPO / path)
    assert spec.name and spec.space and spec.budget.n_trials > 0


def test_unknown_key_is_named_with_a_suggestion():
    table = tiny_table()
    table["sampler"]["seeed"] = 1
    message = error_of(table)
    assert message.startswith("sampler.seeed: unknown setting") and "did you mean 'seed'" in message


def test_unknown_key_in_a_search_dimension_is_named():
    table = tiny_table()
    table["space"]["model"]["channels"] = {"choices": [2, 4], "lo": 1}
    assert error_of(table).startswith("space.model.channels.lo: unknown setting")


@pytest.mark.parametrize("low, high", [(0.01, 0.01), (0.02, 0.001)])
def test_empty_or_inverted_range_is_rejected(low, high):
    table = tiny_table()
    table["space"]["train"]["learning_rate"] = {"low": low, "high": high, "log": True}
    message = error_of(table)
    assert message.startswith("space.train.learning_rate:") and "empty or inverted range" in message


def test_unknown_searched_setting_lists_valid_ones():
    table = tiny_table()
    table["space"]["model"]["chanels"] = {"choices": [2, 4]}
    message = error_of(table)
    assert message.startswith("space.model.chanels: unknown setting") and "channels" in message


def test_searched_value_the_model_rejects_is_caught_at_load():
    table = tiny_table()
    table["space"]["model"]["kernel_size"] = {"low": 1, "high": 3}
    assert error_of(table).startswith("space.model.kernel_size: value 1 is not a valid setting")


def test_data_cannot_be_searched():
    table = tiny_table()
    table["space"]["data"] = {"audio": {"corpus_seconds": {"low": 1, "high": 2}}}
    assert error_of(table).startswith("space.data:")


@pytest.mark.parametrize("url", ["mysql://u@h/db", "sqlite://relative.db", "sqlite:///:memory:",
                                 "postgresql:///nohost", "journal:", "optuna.db"])
def test_bad_storage_url_is_named(url):
    table = tiny_table()
    table["storage"] = {"url": url}
    assert error_of(table).startswith("storage.url:")


@pytest.mark.parametrize("section, value", [("sampler", "bayes"), ("pruner", "asha")])
def test_unknown_sampler_or_pruner(section, value):
    table = tiny_table()
    table[section]["kind"] = value
    message = error_of(table)
    assert message.startswith(f"{section}.kind: '{value}' is not one of")


def test_multi_objective_study_cannot_prune():
    table = tiny_table()
    table["objective"]["multi_objective"] = True
    assert error_of(table).startswith("pruner.kind:")


def test_base_config_errors_are_prefixed():
    table = tiny_table()
    table["base"]["train"]["learning_rate"] = -1
    assert error_of(table).startswith("base.train.learning_rate:")


def test_budget_is_required():
    table = tiny_table()
    table["budget"] = {"n_trials": 0}
    assert error_of(table).startswith("budget.n_trials:")


def test_file_errors_start_with_the_file_name(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(TINY_STUDY.read_text().replace('kind = "tpe"', 'kind = "tpee"'))
    with pytest.raises(ConfigError, match=r"^.*bad\.toml: sampler\.kind"):
        load_study_spec(path)


def test_cli_rejects_a_bad_study_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad.toml"
    path.write_text(TINY_STUDY.read_text().replace("[storage]", "") + '\n[storage]\nurl = "redis://x"\n')
    assert main(["study", "run", str(path)]) == 2
    assert "storage.url:" in capsys.readouterr().err
    assert not (tmp_path / "data").exists() and not (tmp_path / "mlruns").exists()


def test_stack_knobs_build_the_dilation_pattern():
    base = load_study_spec(TINY_STUDY).base
    cfg = apply_params(base, {"model.layers_per_stack": 3, "model.stacks": 2, "model.channels": 6,
                              "train.learning_rate": 0.01})
    assert cfg.model.dilations == (1, 2, 4, 1, 2, 4) and cfg.model.channels == 6
    assert cfg.train.learning_rate == 0.01 and cfg.data == base.data
    assert stack_shape((1, 2, 4, 8, 1, 2, 4, 8)) == (4, 2) and stack_shape((1, 3)) is None


def test_a_study_searches_nams_a1_against_its_a2_by_preset():
    """`model.preset` choices: each preset's architecture with [base.model]'s knob conditioning; shape
    values conditional on the preset; an exportable-only study refuses a preset that does not export."""
    space = {"preset": {"choices": ["nam-standard", "nam-a2"]},
             "channels": {"choices": [3, 8, 12], "when": {"model.preset": "nam-a2"}},
             "array_channels": {"choices": [4, 8], "when": {"model.preset": "nam-standard"}}}
    table = {"name": "a1-vs-a2", "exportable_only": True, "budget": {"n_trials": 2},
             "base": {"model": {"preset": "nam-nano", "conditioning": "film", "film_hidden": 8}}, "space": {"model": space}}
    spec = study_spec_from_mapping(table)
    a2 = apply_params(spec.base, {"model.preset": "nam-a2", "model.channels": 12}).model
    assert (a2.channels, a2.head_kernel_size, a2.kernel_sizes[14:16]) == (12, 16, (15, 15))
    assert (a2.conditioning, a2.film_hidden) == ("film", 8)  # the base's knobs, A2's architecture
    a1 = apply_params(spec.base, {"model.preset": "nam-standard", "model.array_channels": 4}).model
    assert (a1.channels, a1.array_channels, a1.head_kernel_size, a1.conditioning) == (16, (4,), 1, "film")
    with pytest.raises(ConfigError, match="exportable_only: the study would train family paper"):
        study_spec_from_mapping({**table, "space": {"model": {"preset": {"choices": ["nam-a2", "WaveNet1"]}}}})
    with pytest.raises(ConfigError, match="space.model.preset: value 'nam-a3' is not a valid setting"):
        study_spec_from_mapping({**table, "space": {"model": {"preset": {"choices": ["nam-a2", "nam-a3"]}}}})


def test_conditional_parameter_is_searched_only_when_its_condition_holds():
    import optuna

    from studies.objective import TrialObjective

    spec = load_study_spec(TINY_STUDY)
    objective = TrialObjective(spec, parent_run_id="", tracking_uri="", n_trials=0)
    study = optuna.create_study()
    for conditioning in ("film", "concat"):
        study.enqueue_trial({"model.conditioning": conditioning})
        trial = study.ask()
        cfg = objective.suggest_config(trial)
        assert cfg.model.conditioning == conditioning
        assert ("model.film_hidden" in trial.params) == (conditioning == "film")
        assert cfg.run_name == f"tiny-t{trial.number:03d}"


def test_multi_fidelity_pruners_need_their_rungs_in_training_samples():
    table = tiny_table()
    table["pruner"] = {"kind": "hyperband", "min_samples": 10_000}
    assert error_of(table).startswith("budget.trial_samples:")
    table["budget"]["trial_samples"] = 10_000
    assert error_of(table).startswith("pruner.min_samples: must be > 0 and < budget.trial_samples (10000)")
    table["budget"]["trial_samples"] = 90_000
    spec = study_spec_from_mapping(table)
    assert spec.base.train.max_samples == 90_000  # trial_samples is the trial's training budget
    table["pruner"] = {"kind": "median", "warmup_epochs": 1}  # the former key: epochs are not compute
    assert "warmup_samples" in error_of(table)


def test_the_former_objective_name_says_why_it_changed():
    table = tiny_table()
    table["objective"]["metric"] = "val_esr"
    message = error_of(table)
    assert message.startswith("objective.metric: 'val_esr' is not one of val_esr_tail_aware") and "renamed" in message
