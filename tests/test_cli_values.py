"""Every bad command-line value or unreadable input ends in one line naming the fix (exit 2)."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from ampstudy.cli import main
from foundation.configs import load_toml
from foundation.errors import ConfigError


def one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


@pytest.mark.parametrize("argv, message", [
    (["study", "run", "s.toml", "--timeout", "nan"], "--timeout: nan is not a finite number"),
    (["study", "run", "s.toml", "--timeout", "-1"], "--timeout: -1: must be >= 0"),
    (["study", "run", "s.toml", "--trials", "2.5"], "--trials: '2.5' is not a whole number"),
    (["study", "run", "s.toml", "--workers", "0"], "--workers: 0: must be >= 1"),
    (["data", "--seconds", "inf"], "--seconds: inf is not a finite number"),
    (["train", "--max-minutes", "nan"], "--max-minutes: nan is not a finite number"),
    (["render", "m", "in.wav", "out.wav", "--block-seconds", "nan"], "--block-seconds: nan is not a finite number"),
    (["promote", "s.toml", "--max-macs", "inf"], "--max-macs: inf is not a finite number"),
    (["promote", "s.toml", "--min-rtf", "0"], "--min-rtf: 0: must be > 0"),
    (["study", "run", "s.toml", "--bogus"], "unrecognized arguments: --bogus"),
    (["train", "--minutes", "nan"], "--minutes: nan is not a finite number"),
    (["train", "--minutes", "0"], "--minutes: 0: must be > 0"),
    (["train", "--minutes", "5", "--max-minutes", "9"], "not allowed with argument --minutes"),
    (["train", "--samples", "0"], "--samples: 0: must be >= 1 and <= 1e+15 training samples"),
    (["train", "--samples", "inf"], "--samples: inf is not a finite number"),
    (["train", "--samples", "1e6", "--minutes", "9"], "--minutes: not allowed with argument --samples"),
    (["promote", "s.toml", "--margin", "-0.1"], "--margin: -0.1: must be >= 0 and <= 10"),
    (["train", "--threads", "0"], "--threads: 0: must be >= 1"),
    (["train", "--set", "bogus_key=1"], "bogus_key"),
    (["riff", "r.wav", "--seconds", "-1"], "--seconds: -1: must be > 0"),
    (["riff", "r.wav", "--sample-rate", "100"], "--sample-rate: 100: must be >= 8000"),
])
def test_bad_numbers_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    assert message in one_line_error(capsys)


def test_nan_or_inf_in_a_config_value_is_named(tmp_path, capsys):
    assert main(["train", "--set", "data.audio.corpus_seconds=inf"]) == 2
    assert "data.audio.corpus_seconds: inf is not a finite number" in one_line_error(capsys)
    path = tmp_path / "run.toml"
    path.write_text("[train]\nlearning_rate = nan\n")
    assert main(["train", "--config", str(path)]) == 2
    assert "train.learning_rate: nan is not a finite number" in one_line_error(capsys)


def test_a_data_folder_that_takes_no_files_is_one_line(capsys):
    # /proc refuses new entries even to root, whose permission bits would say yes
    assert main(["data", "--data-dir", "/proc/ampstudy-data", "--seconds", "1"]) == 2
    assert "data.data_dir /proc/ampstudy-data: cannot build a dataset there" in one_line_error(capsys)


def test_non_utf8_study_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_bytes(b'name = "caf\xe9"\n')  # latin-1
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_toml(path)
    assert main(["study", "run", str(path)]) == 2
    assert "not UTF-8" in one_line_error(capsys)


def test_a_wrong_password_in_the_tracking_uri_is_one_line_at_once(study_workdir, study_data_dir, postgres_url,
                                                                   capsys):
    """Issue 22 #3: MLflow retried a refused login for ~50 s and ended in two SQLAlchemy tracebacks."""
    import time
    from urllib.parse import urlsplit

    from tests.conftest import write_study_file

    parts = urlsplit(postgres_url)
    wrong = postgres_url.replace(f"{parts.username}:{parts.password}@", f"{parts.username}:not-the-Password7@", 1)
    assert wrong != postgres_url
    path = write_study_file(study_workdir / "s.toml", study_data_dir, name="badmlflow", n_trials=1,
                            replace={'registered_model = "bassman-wavenet"':
                                     f'registered_model = "bassman-wavenet"\ntracking_uri = "{wrong}"'})
    started = time.monotonic()
    assert main(["study", "run", str(path)]) == 2
    line = one_line_error(capsys)
    assert time.monotonic() - started < 20
    assert "cannot open the MLflow tracking store" in line and "not-the-Password7" not in line and "***" in line


def test_unreachable_postgres_is_one_line_with_the_password_masked(study_workdir, study_data_dir, capsys):
    from tests.conftest import write_study_file

    path = write_study_file(study_workdir / "s.toml", study_data_dir, name="nopg", n_trials=1)
    assert main(["study", "run", str(path), "--storage", "postgresql://amp:s3cret@127.0.0.1:1/optuna"]) == 2
    line = one_line_error(capsys)
    assert "cannot open the study storage postgresql://amp:***@127.0.0.1:1/optuna" in line
    assert "s3cret" not in line


def test_saved_wav_and_model_folder_follow_the_umask(tmp_path):
    import torch

    from ampmodel.config import WaveNetConfig
    from ampmodel.wavenet import WaveNet
    from datamodules.audio_io import save_wav
    from training.model_io import save_model
    from training.run_config import RunConfig

    old = os.umask(0o027)
    try:
        save_wav(tmp_path / "a.wav", np.zeros(10, np.float32), 16000)
        cfg = RunConfig(model=WaveNetConfig(channels=2, dilations=(1, 2), kernel_size=2))
        model = save_model(tmp_path / "model", WaveNet(cfg.model), cfg, {"sample_rate": 16000})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.wav").stat().st_mode) == 0o640
    assert stat.S_IMODE(model.stat().st_mode) == 0o750
    assert torch.load(model / "state_dict.pt", weights_only=True)


def test_train_minutes_is_a_budget_and_set_reaches_top_level_keys():
    from ampstudy.cli import build_parser
    from ampstudy.cli import UNLIMITED_EPOCHS, run_config_from_args

    def config(*argv):
        return run_config_from_args(build_parser().parse_args(["train", *argv]))

    cfg = config("--minutes", "3", "--threads", "2", "--set", "run_name=my-run", "--set", "experiment=amp tests")
    assert (cfg.train.max_minutes, cfg.train.max_epochs, cfg.train.early_stopping_patience) == (3, UNLIMITED_EPOCHS, 0)
    assert (cfg.train.threads, cfg.run_name, cfg.experiment) == (2, "my-run", "amp tests")
    asked = config("--minutes", "3", "--max-epochs", "7", "--set", "train.early_stopping_patience=4")
    assert (asked.train.max_epochs, asked.train.early_stopping_patience) == (7, 4)
    capped = config("--max-minutes", "3")  # a cap: the defaults still stop training early
    assert (capped.train.max_minutes, capped.train.early_stopping_patience) == (3, 8)
    compute = config("--samples", "300e6")  # the budget that means the same on any machine
    assert (compute.train.max_samples, compute.train.max_minutes, compute.train.max_epochs,
            compute.train.early_stopping_patience) == (300_000_000, 0, UNLIMITED_EPOCHS, 0)
