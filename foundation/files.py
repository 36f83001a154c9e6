"""Writing files so that a reader never sees half of one, with the permissions the user asked for.

`tempfile.mkstemp` / `mkdtemp` always create 0600 / 0700 (they are meant for secrets); a file or
folder renamed into place from one of them would stay unreadable to the group, so a shared data or
model folder would not be shared. `as_created` gives such a path the mode `open()` / `mkdir()`
would have given it.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def as_created(path: str | Path, directory: bool = False) -> None:
    """chmod `path` to what open() (0666) or mkdir() (0777) minus the umask would have made it."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path`; when the block ends without error it replaces `path`.

    mkstemp creates files readable by the owner only; the result gets the mode any new file would
    get (0666 minus the umask), so a shared data or model folder stays readable by the team.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        as_created(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def probe_writable(folder: str | Path) -> None:
    """Create and remove a file in `folder`; OSError if that is not possible. Permission bits do
    not tell (root passes os.access on /proc, where nothing can be created)."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=".ampstudy-write-probe.")
    os.close(fd)
    os.unlink(name)


def write_atomically(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """`writer(tmp)` writes the file; it appears at `path` only once complete."""
    with atomic_path(path) as tmp:
        writer(tmp)


@contextmanager
def file_lock(path: Path, timeout: float | None = 120.0,
              on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """An flock()ed file; released by the kernel even if the holder is killed.

    timeout None waits as long as the holder holds it; `on_wait()` is called once if the lock is
    taken when asked for (to tell the user why nothing happens)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    waited = False
    with open(path, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"waited {timeout:.0f} s for lock {path}") from None
                if not waited and on_wait is not None:
                    on_wait()
                waited = True
                time.sleep(0.05 if deadline is not None else 0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
