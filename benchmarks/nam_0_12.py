"""neural-amp-modeler 0.12.3, for what only that version has: the A1 trainer architectures
(standard/lite/feather/nano, `nam.train.core.get_wavenet_config`), the WaveNet constructor they use,
and the .nam format 0.5 loader. `make nam` installs 0.13.0 in the venv and 0.12.3 in its own folder
beside it; `prefer_nam_0_12()` puts that folder first on sys.path, before anything imports `nam`."""

from __future__ import annotations

import sys
from pathlib import Path

NAM_0_12 = Path(sys.prefix) / "nam-0.12.3"  # `make nam`: pip install --no-deps --target .venv/nam-0.12.3


def prefer_nam_0_12() -> None:
    """Make `import nam` import 0.12.3 (a no-op where that folder is missing: `import nam` then says so)."""
    if "nam" in sys.modules and not sys.modules["nam"].__file__.startswith(str(NAM_0_12)):
        raise RuntimeError("neural-amp-modeler was imported before prefer_nam_0_12(); call it first")
    if NAM_0_12.is_dir() and str(NAM_0_12) not in sys.path:
        sys.path.insert(0, str(NAM_0_12))
