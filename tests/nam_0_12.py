"""Python code run under neural-amp-modeler 0.12.3, which `make nam` installs in its own folder beside
the venv's 0.13.0: the .nam format 0.5 and the A1 trainer architectures (standard/lite/feather/nano)
are that version's. The code runs in a fresh interpreter with that folder first on sys.path and
prints one JSON document, which `run_under_nam_0_12` returns."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from benchmarks.nam_0_12 import NAM_0_12



def run_under_nam_0_12(code: str, *args: str) -> object:
    """Run `code` (its argv: `args`) with neural-amp-modeler 0.12.3 importable as `nam`; its stdout's
    last line, parsed as JSON."""
    assert (NAM_0_12 / "nam").is_dir(), f"{NAM_0_12} is missing: `make nam` installs neural-amp-modeler 0.12.3 there"
    env = {**os.environ, "PYTHONPATH": str(NAM_0_12)}
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
