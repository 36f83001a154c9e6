"""User-facing errors: the CLI prints their message and exits 2, no traceback."""


class AmpStudyError(Exception):
    """Base for errors caused by the user's input or environment; the message names the fix."""


class ConfigError(AmpStudyError):
    """A config or study file is malformed (unknown key, wrong type, out-of-range value)."""


class TrainingDiverged(AmpStudyError):
    """The loss became NaN or infinite; usually the learning rate is too high."""
