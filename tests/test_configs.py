"""Config loading: unknown keys, wrong types and bad ranges fail with the dotted field name."""

import pytest

from ampmodel.config import PRESETS, parse_dilations
from ampstudy.cli import main
from foundation.configs import from_mapping, load_toml, to_dict
from foundation.errors import ConfigError
from training.run_config import RunConfig, TrainConfig, run_config_from_mapping


@pytest.mark.parametrize("table, message", [
    ({"trian": {}}, "trian: unknown setting (did you mean 'train'?)"),
    ({"train": {"lerning_rate": 0.1}}, "train.lerning_rate: unknown setting (did you mean 'learning_rate'?)"),
    ({"train": {"batch_size": "16"}}, "train.batch_size: expected an integer or 'auto', got '16'"),
    ({"train": {"batch_size": 0}}, "train.batch_size: must be >= 1 (or \"auto\")"),
    ({"train": {"accelerator": "tpu"}}, "train.accelerator: 'tpu' is not one of auto, cpu, cuda"),
    ({"train": {"precision": "bf16-true"}}, "train.precision: 'bf16-true' is not one of 32, bf16-mixed, 16-mixed"),
    ({"train": {"accelerator": "cpu", "precision": "16-mixed"}}, "train.precision: '16-mixed' needs a CUDA GPU"),
    ({"train": {"batch_size": 1.5}}, "train.batch_size: expected an integer"),
    ({"train": {"learning_rate": -1}}, "train.learning_rate: must be > 0"),
    ({"data": {"audio": {"region_split": [0.5, 0.5, 0.5]}}}, "data.audio.region_split"),
    ({"data": {"knobs": {"settings": [{"volume": 1.5}]}}},
     "data.knobs.settings[0].volume: knob position 1.5 is outside 0..1"),
    ({"data": {"knobs": {"settings": [{"gain": 0.5}]}}}, "data.knobs.settings[0].gain: unknown setting"),
    ({"data": {"split": [0.8, 0.1, 0.1]}}, "data.split: this setting is now data.audio.region_split; move it there"),
    ({"data": {"setting_split": [0.7, 0.2, 0.1]}}, "data.setting_split: this setting is now data.knobs.design_split"),
    ({"train": {"loss_reference": "dataset"}}, "train.loss_reference: this setting is now train.loss.reference"),
    ({"train": {"loss": "esr_dc"}}, "train.loss: is now a table; write train.loss.kind = 'esr_dc'"),
    ({"train": {"loss": {"kind": "l1"}}}, "train.loss.kind: 'l1' is not one of esr, esr_dc, esr_stft"),
    ({"model": {"preset": "WaveNet9"}}, "model.preset: 'WaveNet9' is not one of"),
    ({"model": {"dilations": "1..3"}}, "model.dilations '1..3': ends of a range must be powers of two"),
    ({"model": {"kernel_size": 1}}, "model.kernel_size"),
    ({"model": {"activation": "relu"}}, "model.activation: 'relu' is not one of"),
    ({"model": {"channels": 100000}}, "model.channels: 100000 is above the limit 256"),
    ({"model": {"knob_gain": True}}, "model.knob_gain: needs knob conditioning"),
    ({"model": {"dilations": "(1..65536)x2", "kernel_size": 16}}, "model.dilations: receptive field 3932131 samples"),
])
def test_bad_run_configs_name_the_field(table, message):
    with pytest.raises(ConfigError) as err:
        run_config_from_mapping(table)
    assert message in str(err.value)


def test_round_trip_and_presets():
    cfg = run_config_from_mapping({"model": {"preset": "WaveNet2", "kernel_size": 2},
                                   "data": {"knobs": {"settings": [{"volume": 0.2}, {"treble": 1.0}]}}})
    assert cfg.model.channels == 8 and cfg.model.kernel_size == 2
    assert cfg.model.dilations == PRESETS["WaveNet2"].dilations
    assert cfg.data.knobs.settings[1].treble == 1.0 and cfg.data.knobs.settings[0].volume == 0.2
    assert run_config_from_mapping(to_dict(cfg)) == cfg
    assert from_mapping(TrainConfig, {"learning_rate": 1}).learning_rate == 1.0  # ints widen to float
    assert RunConfig().model == PRESETS["WaveNet3"]


def test_dilation_patterns():
    assert parse_dilations("1..512") == tuple(2**k for k in range(10))
    assert parse_dilations("(1..4)x2") == (1, 2, 4, 1, 2, 4)
    assert parse_dilations("1, 3, 9") == (1, 3, 9)
    assert PRESETS["WaveNet1"].receptive_field == 2047
    assert PRESETS["WaveNet3"].receptive_field == 2045


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(bad)


def test_cli_reports_config_errors_without_traceback(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text("[model]\nchanels = 8\n")
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "model.chanels: unknown setting (did you mean 'channels'?)" in err
    assert "Traceback" not in err
    assert main(["data", "--pots", "0.5,0.5"]) == 2
    assert "expected four numbers" in capsys.readouterr().err
    assert main(["train", "--set", "learning_rate=3"]) == 2
    err = capsys.readouterr().err
    assert "SECTION.KEY=VALUE" in err and "write --set train.learning_rate=3" in err


def test_cli_design_options_make_a_knob_design(tmp_path, capsys):
    from ampstudy.cli import build_parser
    from ampstudy.cli import run_config_from_args

    args = build_parser().parse_args(["data", "--design", "32", "--design-seconds", "4", "--data-dir", str(tmp_path)])
    data = run_config_from_args(args).data
    assert (data.knobs.design_settings, data.knobs.design_seconds, data.knobs.settings) == (32, 4.0, ())
    with_pots = build_parser().parse_args(["data", "--design", "8", "--pots", "0.5,0.5,0.5,0.5"])
    assert len(run_config_from_args(with_pots).data.knobs.settings) == 1  # listed settings kept beside the design
    assert main(["data", "--design", "0"]) == 2
    assert "--design" in capsys.readouterr().err


def test_a_model_saved_before_the_config_groups_still_loads(tmp_path):
    """A config.json written before the groups (flat [data] and [train]) loads into the grouped config,
    every value in its new place; a config file with those keys is refused (above)."""
    import json

    from ampmodel.loading import build_wavenet
    from training.model_io import load_model, save_model

    cfg = run_config_from_mapping({"model": {"channels": 2, "dilations": "1..4"},
                                   "data": {"knobs": {"design_settings": 8, "design_split": [0.5, 0.25, 0.25]},
                                            "audio": {"region_split": [0.6, 0.2, 0.2], "corpus_seconds": 3.0},
                                            "simulation": {"warmup_seconds": 0.5}},
                                   "train": {"loss": {"kind": "esr_dc", "reference": "setting",
                                                      "pre_emphasis": 0.85}}})
    directory = save_model(tmp_path / "model", build_wavenet(cfg.model), cfg, {"sample_rate": 44100})
    meta = json.loads((directory / "config.json").read_text())
    flat = meta["run_config"]
    for section in ("data", "train"):  # the layout of an older ampstudy
        table = flat[section]
        for group in (("knobs", "audio", "simulation") if section == "data" else ("loss",)):
            table.update(table.pop(group))
    flat["data"]["setting_split"], flat["data"]["split"] = flat["data"].pop("design_split"), flat["data"].pop("region_split")
    flat["train"]["loss"], flat["train"]["loss_reference"] = flat["train"].pop("kind"), flat["train"].pop("reference")
    assert "knobs" not in flat["data"] and flat["train"]["loss"] == "esr_dc"
    (directory / "config.json").write_text(json.dumps(meta))
    assert load_model(directory).run_config == cfg
