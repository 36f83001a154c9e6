"""Ending a worker on SIGTERM or SIGINT without leaving anything RUNNING.

`GracefulStop` replaces the two handlers while a worker runs; they only raise the worker's
`StopFlag` (foundation/stop_flag.py). A trial's training stops at its next safe point (between
steps, between validation batches, between the phases of the run; at once while its dataset is
being built): the trial ends as FAIL (and is re-queued), its MLflow run is closed KILLED with the
reason, and the worker leaves the study (closing the parent run if it was the last worker). A
signal at any other moment lets the work in hand finish; the worker stops before its next trial.
Repeated signals are ignored while stopping (a terminal's Ctrl-C reaches the workers and their
parent, which forwards it too).

Local worker processes (`--workers N`) ask the kernel for SIGTERM when their parent dies
(`die_with_parent`, Linux prctl PR_SET_PDEATHSIG), so `kill -9` of the parent ends them gracefully.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator

from foundation.errors import StopRequested
from foundation.stop_flag import StopFlag

SIGNALS = (signal.SIGTERM, signal.SIGINT)
PR_SET_PDEATHSIG = 1


class GracefulStop(StopFlag):
    """Context manager installing the SIGTERM/SIGINT handlers (main thread only)."""

    def __init__(self) -> None:
        super().__init__()
        self._previous: dict[int, object] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is None:
            logging.getLogger("ampstudy").warning(
                f"{signal.Signals(signum).name}: stopping at the next safe point; the running trial (if any) is "
                "failed and re-queued")
        self.request(signum)


def die_with_parent(parent_pid: int) -> None:
    """Ask for SIGTERM when the parent process dies (Linux); exit now if it already has."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # died before prctl took effect
        raise StopRequested(signal.SIGTERM, "the parent process is gone")


def worker_entry(parent_pid: int, worker_index: int, plan: bytes) -> None:
    """Target of a spawned local worker (`--workers N`). It asks for its parent's death signal
    before anything heavy: importing the worker's code (torch, Lightning, MLflow) takes seconds,
    and a parent killed meanwhile must end its workers at once, not after those imports. `plan` is
    the pickled RunPlan, unpickled only then (unpickling imports the worker's modules)."""
    import pickle

    try:
        die_with_parent(parent_pid)
    except StopRequested as stop:
        print(f"worker {worker_index}: {stop}", file=sys.stderr, flush=True)
        sys.exit(128 + stop.signum)
    from studies.worker_loop import worker_process

    worker_process(pickle.loads(plan), worker_index)


@contextlib.contextmanager
def forward_signals(pids: list[int]) -> Iterator[list[int]]:
    """In the parent of local worker processes: pass SIGTERM/SIGINT on to them and keep waiting for
    them to finish their clean-up. Yields the list of signals received."""
    received: list[int] = []

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    previous = {signum: signal.signal(signum, forward) for signum in SIGNALS}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
