"""A stop asked for by a signal, acted on only at safe points.

A signal handler may run between any two bytecodes of the main thread: inside an SQL statement of
MLflow or Optuna, half-way through writing a file. So the handler only calls `request`, and the
work asks `check()` where stopping leaves nothing half done: between training steps, between
validation batches, between the phases of a run. The one exception is a span marked
`interruptible()` (e.g. building a dataset, whose SPICE processes and atomic files clean up
after any exception): there a request raises at once, because the next safe point may be minutes
away.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

from foundation.errors import StopRequested


class StopFlag:
    def __init__(self) -> None:
        self.signum: int | None = None
        self._interruptible = False

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def request(self, signum: int) -> None:
        """Called by a signal handler: remember the first signal; raise only inside `interruptible()`."""
        if self.signum is None:
            self.signum = signum
        if self._interruptible:
            self._interruptible = False  # raise once; the clean-up must not be interrupted again
            raise StopRequested(signum, f"stopped by {signal.Signals(signum).name} while building the dataset")

    def check(self, where: str = "") -> None:
        """A safe point: raise StopRequested if a stop was asked for (`where`: what it ends after)."""
        if self.signum is not None:
            name = signal.Signals(self.signum).name
            raise StopRequested(self.signum, f"stopped by {name}" + (f" at a safe point ({where})" if where else ""))

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """The span in which a request raises at once (work that cleans up after any exception)."""
        self.check()
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False
