"""Command-line values: every number is checked (finite, in range) while parsing, and every bad
value or unknown option ends in one line (exit 2) instead of argparse's usage block."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors that point at --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def number(kind: type = float, *, low: float | None = None, high: float | None = None,
           above: bool = False, unit: str = "") -> Callable[[str], float | int]:
    """An argparse `type=`: `kind` from text, finite, >= low (> low if `above`) and <= high."""
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        too_low = low is not None and (value <= low if above else value < low)
        if too_low or (high is not None and value > high):
            bounds = [f"{'>' if above else '>='} {low:g}" if low is not None else "",
                      f"<= {high:g}" if high is not None else ""]
            raise argparse.ArgumentTypeError(f"{text}: must be {' and '.join(b for b in bounds if b)}"
                                             + (f" {unit}" if unit else ""))
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse
