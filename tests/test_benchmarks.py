"""Benchmarks in their smoke modes, so that none rots unnoticed (their full runs write
benchmarks/results/; these write nothing)."""

from __future__ import annotations

import re


def test_the_band_limited_data_benchmark_runs(study_data_dir, capsys):
    from benchmarks.band_limited_data import main as band_limited_data

    assert band_limited_data(["--smoke", "--data-dir", str(study_data_dir)]) == 0
    out = capsys.readouterr().out
    for arm in ("point-sampled (K = 1)", "band-limited (K = 16)"):
        assert re.search(rf"{re.escape(arm)}: median tail-aware test ESR \d", out), out


def test_the_inference_threads_table_runs(capsys):
    from benchmarks.model_speed import main as model_speed

    model_speed(["--threads-table", "--quick", "--threads-presets", "nam-nano"])
    rows = [line for line in capsys.readouterr().out.splitlines() if "nam-nano" in line]
    assert len(rows) == 2 and rows[0].startswith("idle") and "busy neighbours" in rows[1], rows
    for row in rows:  # RTF at 1 thread, RTF at the default, their ratio: all positive numbers
        *_, one, default, ratio = row.split()
        assert float(one) > 0 and float(default) > 0 and float(ratio.rstrip("x")) > 0


def test_the_conditioning_cost_benchmark_runs(capsys):
    from benchmarks.conditioning import main as conditioning

    assert conditioning(["--smoke"]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| nam-nano")]
    assert [r[1].strip() for r in rows] == ["none", "film"] and rows[0][5].strip() == "1.000"
