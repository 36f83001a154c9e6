"""Where a benchmark's table goes: `benchmarks/results/<name>.md`, headed by when, on which commit,
on which machine and by which command it was measured, so docs can cite the file instead of
copying numbers. `write_results(name, body)` (re)writes the file and returns its path; `publish`
prints a benchmark's table and writes it unless told not to (a smoke run, --no-write).
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """'2 cores (AMD EPYC ...), 24 GiB, no GPU'-style description of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = ""
    try:
        kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal")))
        memory = f", {kib / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except ImportError:
        pass
    return f"{cores} cores ({cpu}){memory}, {gpu}, Python {platform.python_version()}"


def commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


STARTED_ON = commit()  # taken when the benchmark imports this module: commits made while it runs don't count


def write_results(name: str, body: str, argv: list[str] | None = None) -> Path:
    """Write `body` (Markdown) under a header of date, commit (the one the benchmark started on),
    machine and command; returns the path. `argv`: the arguments main(argv) was given, when they
    are not the command line's (a call in-process)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    argv = [Path(sys.argv[0]).as_posix(), *(sys.argv[1:] if argv is None else argv)]
    header = (f"# {name}\n\n"
              f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}\n"
              f"- commit: {STARTED_ON}\n"
              f"- machine: {machine()}\n"
              f"- command: `{shlex.join(argv)}`\n\n")
    path = RESULTS / f"{name}.md"
    path.write_text(header + body.rstrip() + "\n")
    return path


def publish(name: str, text: str, write: bool, argv: list[str] | None = None) -> None:
    """Print a benchmark's table; when `write`, also write it to results/<name>.md and say where."""
    print("\n" + text)
    if write:
        print(f"written to {write_results(name, text, argv)}")
