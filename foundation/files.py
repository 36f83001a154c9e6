"""Files other people may read: atomic writes keep the permissions the user's umask allows.

`tempfile.mkstemp` / `mkdtemp` always create 0600 / 0700 (they are meant for secrets); a file
renamed into place from one of them would stay unreadable to the group, so a shared data_dir or
model folder would not be shared. `as_created` gives such a path the mode `open()` / `mkdir()`
would have given it.
"""

from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask is process-wide:
    setting and restoring it races with other threads creating files)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_created(path: str | Path, directory: bool = False) -> None:
    """chmod `path` to what open() (0666) or mkdir() (0777) minus the umask would have made it."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())
