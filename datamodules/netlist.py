"""Render the Bassman 5F6-A netlist template for one knob setting.

The template (`bassman_5f6a.cir`, next to this file) holds the circuit; this module fills in the
pot resistances for the knob positions in `PotSettings`, the input source and the analysis block.

Pot taper law
-------------
A knob position x in 0..1 (0 = fully counter-clockwise) turns into the fraction f(x) of the
track resistance between the wiper and the "low" end (ground for volume; the treble pot's lower
end; the whole rheostat for bass and middle). Fender fitted audio-taper ("A") pots; an A taper is
modelled as the smooth exponential law

    f(x) = (B**x - 1) / (B - 1),   B = 81,

which gives the usual 10 % of the track at half rotation (f(0.5) = 1/(sqrt(B) + 1) = 0.1),
f(0) = 0 and f(1) = 1. A linear pot is f(x) = x. No pot section is ever below `MIN_POT_OHMS`
(1 ohm) so ngspice never sees a zero-valued resistor.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from string import Template

from datamodules.config import PotSettings

TEMPLATE_PATH = Path(__file__).with_name("bassman_5f6a.cir")
MIN_POT_OHMS = 1.0
AUDIO_TAPER_BASE = 81.0  # f(0.5) = 0.1, the classic 10 % "A" taper

# Output node of the rendered netlist (tone-stack output, i.e. what feeds the phase inverter).
OUTPUT_NODE = "out"
INPUT_NODE = "in"

# Stage name -> (plate node, cathode node): what `spice.operating_point` reports and checks.
STAGE_NODES = {
    "V1_normal": ("p1n", "k1"),
    "V1_bright": ("p1b", "k1"),
    "V2A": ("p2a", "k2a"),
    "V2B": ("bplus", "k2b"),
}


@dataclass(frozen=True)
class Pot:
    """A potentiometer of the 5F6-A: total track resistance and taper ('audio' or 'linear')."""

    ohms: float
    taper: str


# Values from the 5F6-A schematic. Tapers: audio for all four. Volume, treble and bass are
# Fender's usual audio pots; for the 25k middle audio is an assumption (linear is the other
# common choice: change it here, and every netlist hash changes with it).
POTS = {
    "volume": Pot(1e6, "audio"),
    "treble": Pot(250e3, "audio"),
    "bass": Pot(1e6, "audio"),
    "middle": Pot(25e3, "audio"),
}


def taper(position: float, law: str) -> float:
    """Fraction of the track between wiper and low end for knob `position` in 0..1."""
    if not 0.0 <= position <= 1.0:
        raise ValueError(f"knob position {position} is outside 0..1")
    if law == "linear":
        return position
    if law == "audio":
        return (AUDIO_TAPER_BASE**position - 1.0) / (AUDIO_TAPER_BASE - 1.0)
    raise ValueError(f"unknown taper law {law!r} (expected 'audio' or 'linear')")


def pot_split(pot: Pot, position: float) -> tuple[float, float]:
    """(upper, lower) section resistances of a pot wired as a divider, each >= MIN_POT_OHMS."""
    lower = pot.ohms * taper(position, pot.taper)
    return max(pot.ohms - lower, MIN_POT_OHMS), max(lower, MIN_POT_OHMS)


def pot_values(pots: PotSettings, bright_volume: float = 0.0) -> dict[str, float]:
    """Resistance (ohms) of every pot section in the template for these knob positions."""
    voln_top, voln_bot = pot_split(POTS["volume"], pots.volume)
    volb_top, volb_bot = pot_split(POTS["volume"], bright_volume)
    treble_top, treble_bot = pot_split(POTS["treble"], pots.treble)
    # Bass and middle are rheostats: knob clockwise = more resistance = more bass / mids.
    bass = max(POTS["bass"].ohms * taper(pots.bass, POTS["bass"].taper), MIN_POT_OHMS)
    mid = max(POTS["middle"].ohms * taper(pots.middle, POTS["middle"].taper), MIN_POT_OHMS)
    return {
        "r_voln_top": voln_top, "r_voln_bot": voln_bot,
        "r_volb_top": volb_top, "r_volb_bot": volb_bot,
        "r_treble_top": treble_top, "r_treble_bot": treble_bot,
        "r_bass": bass, "r_mid": mid,
    }


def input_source_line(input_path: str | Path | None) -> str:
    """XSPICE filesource reading (time, volts) rows, or a 0 V DC source for operating points."""
    if input_path is None:
        return f"Vin {INPUT_NODE} 0 DC 0"
    path = str(input_path)
    if '"' in path or any(c.isspace() for c in path):
        # ngspice's model-parameter parser cannot quote these; temp dirs never contain them.
        raise ValueError(f"input file path {path!r} must not contain quotes or whitespace")
    # amplstep=false: linear interpolation between samples. A staircase would put a jump at
    # every sample, forcing tiny solver steps there and adding zero-order-hold imaging.
    return (f"Ain %v([{INPUT_NODE}]) audio_in\n"
            f".model audio_in filesource (file=\"{path}\" amploffset=[0] amplscale=[1]\n"
            f"+ timeoffset=0 timescale=1 timerelative=false amplstep=false)")


def render_netlist(pots: PotSettings, *, input_path: str | Path | None = None,
                   analysis: str = "", bright_volume: float = 0.0,
                   template: str | None = None) -> str:
    """The complete ngspice deck for knob setting `pots`.

    input_path: text file of "time value" rows for the filesource input (None: 0 V DC input).
    analysis: analysis and .control lines inserted before `.end` (spice.py writes these).
    bright_volume: the idle bright channel's volume knob (it loads the mixing node).
    template: netlist text to use instead of bassman_5f6a.cir (tests use a broken one).
    """
    text = TEMPLATE_PATH.read_text() if template is None else template
    values = {k: f"{v:.6g}" for k, v in pot_values(pots, bright_volume).items()}
    return Template(text).substitute(values, input_source=input_source_line(input_path),
                                     analysis=analysis)


def netlist_hash(text: str) -> str:
    """sha256 hex digest of a netlist text (part of dataset cache keys)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
