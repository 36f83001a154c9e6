"""Whether a challenger takes alias `champion` from the reigning model: `verdict(challenger, champion)`.

Both sides are the numbers of `training.evaluate.evaluate_net` on the same test split, computed by
the same code in the same `promote` call (the champion is re-evaluated, never trusted from a tag).
The challenger wins only if all three hold:

1. its tail-aware test ESR beats the champion's by the margin: challenger x (1 + margin) < champion
   (the default, GATE_MARGIN, is the seed-to-seed spread measured by benchmarks/seed_spread.py,
   benchmarks/results/seed_spread.md: retraining one configuration with another seed at the same
   compute moves the number by about this much between two seeds, so a smaller win is noise);
2. it is not worse at its worst scored setting (no new broken knob position);
3. setting by setting, it is at least as good at half of the scored settings or more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

GATE_MARGIN = 0.35  # benchmarks/results/seed_spread.md: the median spread between two seeds, rounded up


@dataclass(frozen=True)
class Verdict:
    moves: bool
    reason: str  # one line: the numbers the decision rests on


def verdict(challenger: dict[str, Any], champion: dict[str, Any], margin: float = GATE_MARGIN) -> Verdict:
    """`challenger` / `champion`: evaluate_net's numbers of one test split (PRIMARY,
    `esr_worst_scored_setting`, `per_scored_setting` {index: ESR})."""
    from training.evaluate import PRIMARY  # here: the CLI imports GATE_MARGIN without loading torch

    ours, theirs = challenger[PRIMARY], champion[PRIMARY]
    worst_ours, worst_theirs = challenger["esr_worst_scored_setting"], champion["esr_worst_scored_setting"]
    common = sorted(set(challenger["per_scored_setting"]) & set(champion["per_scored_setting"]))
    wins = sum(challenger["per_scored_setting"][s] <= champion["per_scored_setting"][s] for s in common)
    facts = (f"tail-aware test ESR {ours:.4g} vs {theirs:.4g} (margin {margin:.0%}), worst setting "
             f"{worst_ours:.4g} vs {worst_theirs:.4g}, as good or better at {wins} of {len(common)} settings")
    if not all(math.isfinite(v) for v in (ours, worst_ours)):
        return Verdict(False, f"the challenger's test numbers are not finite: {facts}")
    if not math.isfinite(theirs) or not math.isfinite(worst_theirs):
        return Verdict(True, f"the champion's test numbers are not finite: {facts}")
    if not ours * (1 + margin) < theirs:
        return Verdict(False, f"not better by the margin: {facts}")
    if worst_ours > worst_theirs:
        return Verdict(False, f"worse at its worst knob setting: {facts}")
    if 2 * wins < len(common):
        return Verdict(False, f"worse at most knob settings: {facts}")
    return Verdict(True, facts)
