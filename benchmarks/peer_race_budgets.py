"""The peer race across budgets: what more CPU time buys each trainer at each size.

    .venv/bin/python benchmarks/peer_race_budgets.py --races peer_race_5min,peer_race_20min
    .venv/bin/python benchmarks/peer_race_budgets.py --arms-dirs DIR,DIR --no-write   # any kept arms

Reads the arms that `benchmarks/peer_race.py` keeps (results/<race>_arms/*.json), trains nothing,
and tabulates, per size and trainer, the median test ESR (ours, pre-emphasis 0.95) over seeds
[min, max] at each budget (process-CPU minutes of training per arm), the ratio NAM / ours at each
budget, and what the largest budget bought over the smallest; with a figure of test ESR vs CPU
minutes, one line per size and trainer. Only arms raced under the same conditions but the budget
(data, knob setting, batch, net) are put side by side; a race whose arms differ otherwise is refused.
A race still missing arms shows the seeds it has (n). Written to
benchmarks/results/peer_race_budgets.md (`--name`) with its .png; `--no-write`: print only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without install

from benchmarks.results_file import RESULTS, publish  # noqa: E402

SIZE_ORDER = ("nano", "feather", "lite", "standard", "A2")  # peer_race's sizes, smallest A1 first


def load_arms(folders: list[Path]) -> list[dict]:
    """Every kept arm in `folders`, each checked to share all conditions but the budget."""
    arms, reference = [], None
    for folder in folders:
        if not folder.is_dir():
            raise SystemExit(f"peer_race_budgets: {folder}: no such folder of kept arms (run benchmarks/peer_race.py)")
        for path in sorted(folder.glob("*.json")):
            arm = json.loads(path.read_text())
            # the budget varies; the net and an ablation (ours_set) are in the arm's size and trainer
            shared = {k: v for k, v in arm["conditions"].items() if k not in ("cpu_budget_s", "net", "ours_set")}
            if reference is None:
                reference = (shared, path)
            elif shared != reference[0]:
                differ = sorted(k for k in {*shared, *reference[0]} if shared.get(k) != reference[0].get(k))
                raise SystemExit(f"peer_race_budgets: {path} was raced under other conditions than {reference[1]} "
                                 f"({', '.join(differ)}); compare races that differ in the budget only")
            arms.append(arm)
    return arms


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.4g} [{min(values):.4g}, {max(values):.4g}] (n={len(values)})"


def report(arms: list[dict]) -> tuple[str, dict]:
    """The Markdown text, and {(size, trainer): {minutes: [test ESRs]}} for the figure."""
    table: dict[tuple[str, str], dict[float, list[float]]] = {}
    for arm in arms:
        minutes = arm["conditions"]["cpu_budget_s"] / 60
        table.setdefault((arm["size"], arm["trainer"]), {}).setdefault(minutes, []).append(arm["test"]["esr"])
    budgets = sorted({m for by in table.values() for m in by})
    sizes = sorted({s for s, _ in table}, key=lambda s: SIZE_ORDER.index(s) if s in SIZE_ORDER else len(SIZE_ORDER))
    heads = [f"{m:g} CPU min" for m in budgets]
    lines = ["Median test ESR (ours, pre-emphasis 0.95) over seeds [min, max] (n seeds) at each budget of "
             "process-CPU minutes of training per arm, and what the largest budget bought over the smallest "
             "(ratio of medians; below 1: lower ESR):", "",
             "| size | trainer | " + " | ".join(heads) + f" | {budgets[-1]:g} / {budgets[0]:g} min |",
             "| --- | --- | " + " | ".join("---:" for _ in budgets) + " | ---: |"]
    for size in sizes:
        for (s, trainer), by in sorted(table.items()):
            if s != size:
                continue
            cells = [summary(by[m]) if m in by else "-" for m in budgets]
            gain = (f"{statistics.median(by[budgets[-1]]) / statistics.median(by[budgets[0]]):.2f}x"
                    if budgets[0] in by and budgets[-1] in by and len(budgets) > 1 else "-")
            lines.append(f"| {size} | {trainer} | " + " | ".join(cells) + f" | {gain} |")
    lines += ["", "Ratio NAM / ours of the medians at each budget (above 1: ours is better):", "",
              "| size | " + " | ".join(heads) + " |", "| --- | " + " | ".join("---:" for _ in budgets) + " |"]
    for size in sizes:
        theirs = [by for (s, t), by in table.items() if s == size and t.startswith("NAM")]
        mine = [by for (s, t), by in table.items() if s == size and t == "ours"]
        if not theirs or not mine:
            continue
        cells = [f"{statistics.median(theirs[0][m]) / statistics.median(mine[0][m]):.2f}x"
                 if m in theirs[0] and m in mine[0] else "-" for m in budgets]
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines), table


def figure(table: dict, path: Path) -> None:
    """Test ESR vs CPU minutes: one line per size (colour) and trainer (NAM dashed, ours solid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    colours = {size: f"C{i}" for i, size in enumerate(SIZE_ORDER)}
    for (size, trainer), by in sorted(table.items()):
        minutes = sorted(by)
        median = [statistics.median(by[m]) for m in minutes]
        ax.errorbar(minutes, median, yerr=[[md - min(by[m]) for md, m in zip(median, minutes)],
                                           [max(by[m]) - md for md, m in zip(median, minutes)]],
                    color=colours.get(size), linestyle="--" if trainer.startswith("NAM") else "-", marker="o",
                    capsize=3, label=f"{size}, {trainer}")
    ax.set(xscale="log", yscale="log", xlabel="process-CPU minutes of training per arm",
           ylabel="test ESR (pre-emphasis 0.95)", title="peer race: test ESR vs budget")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--races", help="peer races by --name, comma-separated: their kept arms are read from "
                        "benchmarks/results/<name>_arms/")
    parser.add_argument("--arms-dirs", help="folders of kept arms instead, comma-separated")
    parser.add_argument("--name", default="peer_race_budgets", help="results file name under benchmarks/results/")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/results/ alone")
    args = parser.parse_args(argv)
    if bool(args.races) == bool(args.arms_dirs):
        parser.error("give --races NAME,NAME (races under benchmarks/results/) or --arms-dirs DIR,DIR")
    folders = ([RESULTS / f"{name.strip()}_arms" for name in args.races.split(",") if name.strip()] if args.races
               else [Path(d.strip()) for d in args.arms_dirs.split(",") if d.strip()])
    arms = load_arms(folders)
    if not arms:
        print("no kept arms: nothing to report")
        return 0
    text, table = report(arms)
    if not args.no_write:
        picture = RESULTS / f"{args.name}.png"
        figure(table, picture)
        text += f"\n\n![test ESR vs CPU minutes]({picture.name})"
    publish(args.name, text, write=not args.no_write, argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
