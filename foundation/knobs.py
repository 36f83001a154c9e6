"""The amp's four knobs: their names, and the one check of a knob position a user or config gives.

Positions are what the player sees: 0 = fully counter-clockwise, 1 = fully clockwise (the taper
that turns a position into resistance lives with the netlist). Inside a model, the same rule is
enforced on tensors by `ampmodel.conditioning.checked_controls` (TorchScript cannot call this);
the rule and its message are foundation.input_rules.knob_position.
"""

from __future__ import annotations

from foundation.errors import ConfigError
from foundation.input_rules import InputRejected, knob_position

KNOB_NAMES = ("volume", "treble", "bass", "middle")
KNOB_RANGE = (0.0, 1.0)


def knob_ranges() -> dict[str, list[float]]:
    """{knob: [lowest, highest]} in model order, as recorded in model files for code that cannot import this."""
    return {name: list(KNOB_RANGE) for name in KNOB_NAMES}


def check_knob(name: str, value: float) -> float:
    """`value` as a float if it is a finite position in 0..1, else ConfigError naming the knob
    (the rule is foundation.input_rules.knob_position, the one every entry point applies)."""
    if name not in KNOB_NAMES:
        raise ConfigError(f"{name}: not a knob of the amp; the knobs are {', '.join(KNOB_NAMES)}")
    try:
        return knob_position(name, value, *KNOB_RANGE)
    except InputRejected as err:
        raise ConfigError(str(err)) from None
