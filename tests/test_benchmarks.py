"""Benchmarks in their smoke modes, so that none rots unnoticed (their full runs write
benchmarks/results/; these write nothing)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO


def in_own_process(script: str, *args: str) -> str:
    """stdout of `python benchmarks/SCRIPT ARGS`, for the benchmarks that run neural-amp-modeler
    0.12.3 (benchmarks/nam_0_12.py): this test process may hold 0.13 imported already."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True,
                          text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_the_band_limited_data_benchmark_runs(study_data_dir, capsys):
    from benchmarks.band_limited_data import main as band_limited_data

    assert band_limited_data(["--smoke", "--data-dir", str(study_data_dir)]) == 0
    out = capsys.readouterr().out
    for arm in ("point-sampled (K = 1)", "band-limited (K = 16)"):
        assert re.search(rf"{re.escape(arm)}: median tail-aware test ESR \d", out), out


def test_the_inference_threads_table_runs():
    out = in_own_process("model_speed.py", "--threads-table", "--quick", "--threads-presets", "nam-nano")
    rows = [line for line in out.splitlines() if "nam-nano" in line]
    assert len(rows) == 2 and rows[0].startswith("idle") and "busy neighbours" in rows[1], rows
    for row in rows:  # RTF at 1 thread, RTF at the default, their ratio: all positive numbers
        *_, one, default, ratio = row.split()
        assert float(one) > 0 and float(default) > 0 and float(ratio.rstrip("x")) > 0


def test_the_conditioning_cost_benchmark_runs(capsys):
    from benchmarks.conditioning import main as conditioning

    assert conditioning(["--smoke"]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| nam-nano")]
    assert [r[1].strip() for r in rows] == ["none", "film"] and rows[0][5].strip() == "1.000"


def test_the_esr_budget_benchmark_runs(study_data_dir, capsys):
    from benchmarks.esr_budget import main as esr_budget

    assert esr_budget(["--smoke", "--data-dir", str(study_data_dir)]) == 0
    out = capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| WaveNet")]
    assert [r[0].strip() for r in rows] == ["WaveNet1", "WaveNet2", "WaveNet3"], out
    samples = {r[2].strip() for r in rows}
    assert len(samples) == 1 and int(samples.pop().replace(",", "")) > 0, out  # equal compute per preset
    for r in rows:
        assert float(r[4]) > 0 and float(r[5]) > 0, r  # validation and test ESR
    assert rows[0][6].strip() == "1.000" and rows[0][7].strip() == "1.000", rows[0]  # ratios to the first preset
    assert "stopped before the sample budget" not in out, out


def test_the_trial_speed_benchmark_runs(study_data_dir, capsys):
    from benchmarks.trial_speed import main as trial_speed

    assert trial_speed(["--smoke", "--data-dir", str(study_data_dir)]) == 0
    out = capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| cpu")]
    assert len(rows) == 1, out
    device, batch, wall, samples, steps, epochs, per_epoch, rate, ratio, val_esr, stopped = (c.strip() for c in rows[0])
    size, segment = (int(n) for n in batch.split("x"))
    assert int(samples.replace(",", "")) == int(steps) * size * segment > 0, rows[0]  # samples the trial trained
    assert int(epochs) == 1 and float(wall) > 0 and float(per_epoch) > 0 and float(rate.replace(",", "")) > 0, rows[0]
    assert ratio == "1.00x" and float(val_esr) > 0 and stopped != "time limit", rows[0]


def test_the_tracking_overhead_benchmark_runs(study_data_dir, capsys):
    from benchmarks.tracking_overhead import main as tracking_overhead

    assert tracking_overhead(["--smoke", "--data-dir", str(study_data_dir)]) == 0
    out = capsys.readouterr().out
    rows = {r[0].strip(): r for r in (line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| "))}
    for mode in ("no tracking", "MLflow, no audio/plots", "MLflow, full logging"):
        assert float(rows[mode][1]) > 0 and float(rows[mode][2]) > 0, out
    assert rows["no tracking"][2].strip() == "1.000", out
    assert re.search(r"Tracking adds [+-]\d+\.\d+ s per trial", out), out
    assert re.search(r"- 30 min trial: \d\.\d{3} \((OK|over) vs target 1\.05\)", out), out


def test_the_peer_race_runs_and_a_rerun_keeps_its_arms(study_data_dir, tmp_path, capsys):
    arms = tmp_path / "arms"
    out = in_own_process("peer_race.py", "--smoke", "--data-dir", str(study_data_dir), "--arms-dir", str(arms))
    budget = float(re.search(r"budget ([\d.]+) process-CPU seconds of training per arm", out).group(1))
    number = r"(\d[\d.e+-]*) \[(\d[\d.e+-]*), (\d[\d.e+-]*)\]"
    table = {}
    # NAM's own counts (both arms train NAM's net: A1, and A2's played submodel), each trained by the NAM that
    # names it and by ours
    for size, nets in (("nano", {"NAM 0.12.3": ("A1 nano", 841), "ours": ("A1 nano", 841)}),
                       ("A2", {"NAM 0.13.0": ("A2, its channels_8 submodel", 12145),
                               "ours": ("A2, its channels_8 submodel", 12145)})):
        for trainer, (net, params) in nets.items():  # size, net, params, trainer, seeds, epochs, CPU s, wall s, scores
            row = re.search(rf"^\| {size} \| {re.escape(net)} \| (\d+) \| {re.escape(trainer)} \| 1 \| (\d+) \| "
                            rf"(\d+) \| (\d+) \| {number} \| {number} \| {number} \|$", out, re.MULTILINE)
            assert row, out
            assert int(row.group(1)) == params and int(row.group(2)) >= 1, row.group(0)
            assert int(row.group(3)) >= round(budget) - 1 and int(row.group(4)) >= int(row.group(3)), row.group(0)
            scores = [float(v) for v in row.groups()[4:]]
            assert all(0 < v < 100 for v in scores), row.group(0)
            table[(size, trainer)] = row.group(0)
        ratio = re.search(rf"^\| {size} \| (\d+\.\d\d)x \| (\d+\.\d\d)x \| (\d+\.\d\d)x \| (yes|no) \|$", out,
                          re.MULTILINE)
        assert ratio, out
        assert (ratio.group(4) == "yes") == (float(ratio.group(1)) >= 3.0), ratio.group(0)
    for split in ("train", "val", "test"):  # what each split holds: seconds, power, share left after pre-emphasis
        row = re.search(rf"^\| {split} \| ([\d.]+) \| ([\d.e-]+) \| ([\d.e-]+) \|$", out, re.MULTILINE)
        assert row and float(row.group(1)) > 0 and float(row.group(2)) > 0 and 0 < float(row.group(3)) < 4, out
    assert sorted(p.name for p in arms.iterdir()) == [f"{t}-{s}-seed0.json" for t in ("nam", "ours")
                                                      for s in ("A2", "nano")]
    # The same command again trains nothing: every arm is kept, and the table is the same.
    again = in_own_process("peer_race.py", "--smoke", "--data-dir", str(study_data_dir), "--arms-dir", str(arms))
    assert again.count(": kept (") == 4 and "test ESR" not in again.split("\n| size")[0], again
    assert all(row in again for row in table.values()), again
    # An ablation of ours trains its own arms beside the default's and races them against NAM's kept ones.
    ablation = in_own_process("peer_race.py", "--smoke", "--data-dir", str(study_data_dir), "--arms-dir", str(arms),
                              "--ours-set", "train.learning_rate=0.004", "--sizes", "nano")
    assert ablation.count(": kept (") == 1 and "ours, train.learning_rate=0.004     nano seed 0: test ESR" in ablation, \
        ablation  # NAM's arm kept; ours' default arm is not this race's
    assert re.search(r"^\| nano \| A1 nano \| 841 \| ours, train.learning_rate=0.004 \| 1 \|", ablation, re.MULTILINE)
    assert "against the same net trained by ampstudy's `train()` with train.learning_rate=0.004" in ablation
    assert [p.name for p in arms.glob("ours+*")] == ["ours+train.learning_rate=0.004-nano-seed0.json"]
    # The race at another budget, in its own folder, then both budgets side by side (peer_race_budgets).
    other = tmp_path / "arms-other-budget"
    in_own_process("peer_race.py", "--smoke", "--data-dir", str(study_data_dir), "--arms-dir", str(other),
                   "--sizes", "nano", "--minutes", "0.04")
    from benchmarks.peer_race_budgets import main as peer_race_budgets

    assert peer_race_budgets(["--arms-dirs", f"{arms},{other}", "--no-write"]) == 0
    budgets = capsys.readouterr().out
    cells = r"(\d[\d.e+-]*) \[\d[\d.e+-]*, \d[\d.e+-]*\] \(n=1\)"
    for trainer in ("NAM 0.12.3", "ours"):
        row = re.search(rf"^\| nano \| {trainer} \| {cells} \| {cells} \| (\d+\.\d\d)x \|$", budgets, re.MULTILINE)
        assert row and float(row.group(3)) == pytest.approx(float(row.group(2)) / float(row.group(1)), rel=0.01), budgets
    assert re.search(r"^\| A2 \| ours \| [\d.e+-]+ \[.*\(n=1\) \| - \| - \|$", budgets, re.MULTILINE), budgets
    assert re.search(r"^\| nano \| \d+\.\d\dx \| \d+\.\d\dx \|$", budgets, re.MULTILINE), budgets
    assert "| nano | ours, train.learning_rate=0.004 |" in budgets  # an ablation is a trainer of its own
    # An arm kept for another net at its size is not this race's: --max-arms 0 reports it missing.
    moved = arms / "ours-A2-seed0.json"
    record = json.loads(moved.read_text())
    record["conditions"]["net"] = "another net"
    moved.write_text(json.dumps(record))
    partial = in_own_process("peer_race.py", "--smoke", "--data-dir", str(study_data_dir), "--arms-dir", str(arms),
                             "--max-arms", "0")
    assert "Partial: 1 of 4 arms still to run** (ours A2 seed 0)" in partial, partial
    # An arm kept under other conditions (another budget) is not one of this race's: --max-arms 0 leaves it missing.
    partial = in_own_process("peer_race.py", "--smoke", "--data-dir", str(study_data_dir), "--arms-dir", str(arms),
                             "--minutes", "0.05", "--max-arms", "0")
    assert "no arm has run yet" in partial, partial


def test_the_knob_generalisation_benchmark_runs(study_data_dir, capsys):
    from benchmarks.knob_generalisation import SMOKE_SAMPLES
    from benchmarks.knob_generalisation import main as knob_generalisation

    assert knob_generalisation(["--smoke", "--data-dir", str(study_data_dir)]) == 0
    out = capsys.readouterr().out
    assert "SMOKE RUN: every arm trains on the tiny study's dataset" in out, out
    assert f"Budget: {SMOKE_SAMPLES:,} training samples per arm" in out, out
    trained = set()
    for arm in ("six", "design", "dense"):  # epochs, samples, wall s, val, seen; the tiny data has no unseen settings
        row = re.search(rf"^\| {arm} \| (\d+) \| ([\d,]+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| nan \|", out, re.MULTILINE)
        assert row, out
        epochs, samples, _, val, seen = row.groups()
        assert int(epochs) >= 1 and float(val) > 0 and float(seen) > 0
        trained.add(int(samples.replace(",", "")))
    assert len(trained) == 1 and SMOKE_SAMPLES <= trained.pop() < 2 * SMOKE_SAMPLES, out  # equal compute per arm
    for arm in ("design", "dense"):
        assert f"- {arm} / six, unseen ESR: " in out, out


def test_the_spice_sanity_benchmark_runs(capsys):
    from benchmarks.spice_sanity import main as spice_sanity

    assert spice_sanity(["--smoke"]) == 0
    out = capsys.readouterr().out
    for stage in ("V1_normal", "V1_bright", "V2A", "V2B"):  # rest voltages: plate, cathode
        row = re.search(rf"^\| {stage} \| ([\d.]+) \| ([\d.]+) \| .+ \|$", out, re.MULTILINE)
        assert row, out
        plate, cathode = (float(v) for v in row.groups())
        assert 100 < plate < 400 and 0.5 < cathode < plate, row.group(0)
    deviations = [int(d) for d in re.findall(r"\d+ vs \d+ \(([+-]\d+)%\)", out)]
    assert len(deviations) == 3 and all(abs(d) <= 20 for d in deviations), out  # within +-20 % of the drawing
    gain = re.search(r"^\| 1 \| ([\d.]+) \| ([\d.]+) \|$", out, re.MULTILINE)  # volume 1: dB, times
    assert gain, out
    db, times = (float(v) for v in gain.groups())
    assert 20 < db < 60 and abs(times / 10 ** (db / 20) - 1) < 0.02, gain.group(0)
    thd = re.search(r"^\| 1 \| 1 \| ([\d.]+) \| ([\d.]+) \| (-[\d.]+) \| (-[\d.]+) \|$", out, re.MULTILINE)
    assert thd, out  # volume 1, 1 V peak in: out V peak, THD %, H2 dB, H3 dB
    peak, percent, h2, h3 = (float(v) for v in thd.groups())
    assert 1 < peak < 100 and 1 < percent < 100 and h2 < 0 and h3 < 0, thd.group(0)


def test_the_spice_speed_benchmark_runs(capsys):
    from benchmarks.spice_speed import SECTIONS
    from benchmarks.spice_speed import main as spice_speed

    assert spice_speed(["--smoke"]) == 0
    out = capsys.readouterr().out
    assert "SMOKE RUN: measures nothing" in out, out
    assert all(f"\n{section}:\n" in out for section in SECTIONS), out
    number = r"(-?[\d.]+)"
    for run in (r"serial \(1 run\)", r"parallel \([\d.]+ s chunks\)"):  # rtf: wall s, audio s per wall s, CPU
        row = re.search(rf"^\| {run} \| {number} \| {number} \| {number} \|$", out, re.MULTILINE)
        assert row and all(float(v) > 0 for v in row.groups()), out
    chunked = re.search(rf"^- chunked vs serial: max error {number} dB re peak, error energy {number} dB$", out,
                        re.MULTILINE)
    assert chunked and all(float(v) < -10 for v in chunked.groups()), out
    for fraction in ("0.25", "0.5"):  # step: audio s per wall s, errors re the 1/16 run
        row = re.search(rf"^\| {fraction} \| {number} \| {number} \| {number} \|$", out, re.MULTILINE)
        assert row, out
        rate, peak, energy = (float(v) for v in row.groups())
        assert rate > 0 and peak < -40 and energy < -40, row.group(0)
    warmup = re.search(rf"^\| 0.02 \| {number} \({number}\) \|$", out, re.MULTILINE)
    assert warmup and all(float(v) < -10 for v in warmup.groups()), out
    alias = {k: (float(a), di) for k, a, di in re.findall(
        rf"^\| v1.00\S+ \| (\d+) \| 0.25 \| {number} \| -?[\d.]+ \| (\(reference\)|-[\d.]+) \|", out, re.MULTILINE)}
    assert set(alias) == {"1", "2"} and alias["2"][1] == "(reference)" and float(alias["1"][1]) < -10, out
    assert all(a <= 0 for a, _ in alias.values()), out
    for run in ("serial, 1 run/setting, K 1", r"pool, warm-up 0.02 s, K 1"):  # dataset: wall s, audio s/wall s
        row = re.search(rf"^\| {run} \| {number} \| {number} \| [\d.]+ \| [\d.]+ \| ([\d.]+)x \|", out, re.MULTILINE)
        assert row and all(float(v) > 0 for v in row.groups()), out


def test_the_study_efficiency_benchmark_runs(study_data_dir, capsys):
    from benchmarks.study_efficiency import ARMS
    from benchmarks.study_efficiency import main as study_efficiency

    cwd = os.getcwd()
    assert study_efficiency(["--smoke", "--data-dir", str(study_data_dir)]) == 0
    assert os.getcwd() == cwd  # it works in a temporary directory and comes back
    out = capsys.readouterr().out
    budget = re.search(r"each arm may spend ([\d,]+) training samples \(1 trials of 2 epochs x ([\d,]+) samples\)", out)
    assert budget, out
    total, per_epoch = (int(v.replace(",", "")) for v in budget.groups())
    assert total == 2 * per_epoch > 0, out
    for arm in ARMS:  # best validation ESR after 25/50/75/100 % of the samples, then trials (complete)
        row = re.search(rf"^\| {re.escape(arm)} \|(.*)\| (\d+) \((\d+)\) \|$", out, re.MULTILINE)
        assert row, out
        cells, trials, complete = row.group(1).split("|"), int(row.group(2)), int(row.group(3))
        assert len(cells) == 4 and 1 <= complete <= trials, row.group(0)
        assert 0 < float(cells[-1].split()[0]) < 10, row.group(0)  # the first trial has completed by 100 %
