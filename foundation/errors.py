"""User-facing errors: the CLI prints their message and exits 2, no traceback."""


class AmpStudyError(Exception):
    """Base for errors caused by the user's input or environment; the message names the fix."""


class ConfigError(AmpStudyError):
    """A config or study file is malformed (unknown key, wrong type, out-of-range value)."""


class TrainingDiverged(AmpStudyError):
    """The loss became NaN or infinite; usually the learning rate is too high."""


class StopRequested(Exception):
    """SIGTERM or SIGINT asked a worker to stop. Raised inside a running trial so that it ends as a
    failed (and re-queued) trial with its MLflow run closed; the CLI then exits 128 + signal."""

    def __init__(self, signum: int, message: str = "") -> None:
        import signal

        self.signum = int(signum)
        self.signal_name = signal.Signals(self.signum).name
        super().__init__(message or f"stopped by {self.signal_name}")
