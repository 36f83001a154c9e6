"""Study report: trials table (CSV), optimisation history, parameter importances and the Pareto
front (validation ESR vs MACs/sample) as matplotlib PNGs, and one HTML page of it all with the
best trial's audio (studies/report_page.py), logged to the study's MLflow parent run under
`study/`; the parent run's description gets the summary with links to the best trial and the
page; a summary table is printed to the terminal. Needs no plotly.

The parent run logs the study's numbers under names no trial uses (`best_trial_val_esr_tail_aware`,
`trials_*`), so sorting the runs table by a trial metric never mixes the study in."""

from __future__ import annotations

import csv
import math
import tempfile
from pathlib import Path
from typing import Any

from studies import mlflow_runs, runs_view
from studies.budget import DUPLICATE_ATTR, EXCESS_ATTR
from studies.fingerprint import HISTORY_ATTR, spec_fingerprint, trial_fingerprint
from studies.objective import TIMED_OUT_ATTR, VAL_ATTRS
from studies.report_page import study_page
from training import tracking

SUMMARY_ROWS = 10
OBJECTIVE = "val_esr_tail_aware"  # a row's objective value (studies/runner.py OBJECTIVE_NAMES[0])
TRIALS_IN_DESCRIPTION = 10  # best complete trials linked from the study run's description
REGISTERED_TAG = "registered_version"  # parent run tag set by `promote`: "<model name>/<version>"


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One flat dict per trial: number, state, values, params, cost and run id, error."""
    rows = []
    multi = len(study.directions) > 1
    attrs = study.user_attrs
    for t in study.get_trials(deepcopy=False):
        duration = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        row: dict[str, Any] = {"number": t.number, "state": t.state.name,
                               OBJECTIVE: (t.values[0] if t.values else None)}
        if multi:
            row["objective_macs_per_sample"] = t.values[1] if t.values else None
        row["seconds"] = round(duration, 1) if duration is not None else None
        row.update({f"param.{k}": v for k, v in t.params.items()})
        if HISTORY_ATTR in attrs:
            row["fingerprint"] = trial_fingerprint(t, attrs)
        for key in (*(f"val_{k}" for k in VAL_ATTRS), "macs_per_sample", "rtf", "params", "receptive_field_samples",
                    "epochs", "samples_trained", "stopped_by", "device", "threads", TIMED_OUT_ATTR,
                    mlflow_runs.RUN_ID_ATTR, "error", EXCESS_ATTR, DUPLICATE_ATTR):
            if key in t.user_attrs:
                row[key] = t.user_attrs[key]
        if t.system_attrs.get("failed_trial") is not None:
            row["retry_of"] = t.system_attrs["failed_trial"]
        row["feasible"] = all(v <= 0 for v in t.constraints.values()) if t.constraints else ""
        rows.append(row)
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def complete_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["state"] == "COMPLETE" and _finite(r.get(OBJECTIVE))]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated in (minimise x, minimise y)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and y2 <= y) and (x2 < x or y2 < y) for x2, y2 in points):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def plot_history(rows: list[dict[str, Any]], path: Path) -> Path:
    from matplotlib.figure import Figure  # Figure + Agg canvas: no pyplot, no GUI backend

    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    done = complete_rows(rows)
    ax.scatter([r["number"] for r in done], [r[OBJECTIVE] for r in done], s=18, label="complete")
    best, so_far = [], math.inf
    for r in done:
        so_far = min(so_far, r[OBJECTIVE])
        best.append(so_far)
    if done:  # the best-so-far line runs to the last trial, whatever its state
        last = max(r["number"] for r in rows)
        ax.step([r["number"] for r in done] + [last], best + best[-1:], where="post", color="C3",
                label="best so far")
    for state, marker, color in (("PRUNED", "x", "0.5"), ("FAIL", "v", "C1")):
        others = [r["number"] for r in rows if r["state"] == state]
        if others and done:
            ax.scatter(others, [max(r[OBJECTIVE] for r in done)] * len(others), marker=marker, color=color,
                       label=f"{state.lower()} (drawn at top)")
    ax.set(xlabel="trial", ylabel="validation ESR (tail-aware)", title="Optimisation history")
    if done and min(r[OBJECTIVE] for r in done) > 0:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    return path


def plot_importances(study: Any, path: Path) -> Path | None:
    import optuna

    try:
        importances = optuna.importance.get_param_importances(study, target=lambda t: t.values[0])
    except (ValueError, RuntimeError, ZeroDivisionError):
        return None  # too few complete trials, or no parameter varied yet
    if not importances:
        return None
    from matplotlib.figure import Figure

    names = list(importances)[::-1]
    fig = Figure(figsize=(7, 0.4 * len(names) + 1.2), layout="constrained")
    ax = fig.add_subplot()
    ax.barh(names, [importances[n] for n in names])
    ax.set(xlabel="importance for validation ESR (PED-ANOVA, normalised)", title="Parameter importances")
    fig.savefig(path, dpi=110)
    return path


def plot_pareto(rows: list[dict[str, Any]], path: Path) -> Path | None:
    done = [r for r in complete_rows(rows) if _finite(r.get("macs_per_sample"))]
    if not done:
        return None
    from matplotlib.figure import Figure

    points = [(r["macs_per_sample"], r[OBJECTIVE]) for r in done]
    front = pareto_front(points)
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(*zip(*points), s=18, color="0.6", label="trials")
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "o-", color="C3", label="Pareto front")
    for i in front:
        ax.annotate(f"#{done[i]['number']}", points[i], fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel="MACs per output sample", ylabel="validation ESR (tail-aware)", title="Accuracy vs compute")
    ax.set_xscale("log")
    if min(p[1] for p in points) > 0:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    return path


def summary_text(study: Any, rows: list[dict[str, Any]], top: int = SUMMARY_ROWS, fingerprint: str = "") -> str:
    """Counts by state, then the best `top` complete trials as an aligned table (only those run
    under `fingerprint` when the study has trials of several settings)."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    lines = [f"study '{study.study_name}': {len(rows)} trials (" +
             ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) + ")"]
    done = complete_rows(rows)
    fingerprints = sorted({r["fingerprint"] for r in rows if r.get("fingerprint")})
    if len(fingerprints) > 1:
        lines.append("trials ran under different settings (fingerprints): " + ", ".join(
            f"{f} ({sum(r.get('fingerprint') == f for r in rows)} trials{', this file' if f == fingerprint else ''})"
            for f in fingerprints) + "; the table compares only this file's")
        done = [r for r in done if r.get("fingerprint") == fingerprint]
    done = sorted(done, key=lambda r: r[OBJECTIVE])[:top]
    if not done:
        return "\n".join(lines + ["no complete trials yet"])
    params = sorted({k for r in done for k in r if k.startswith("param.")})
    header = ["#", "val ESR", "geomean", "mean", "worst", "Msamples", "MACs/smp", "RTF",
              *[p.removeprefix("param.").split(".")[-1] for p in params]]
    table = [header]
    for r in done:
        table.append([str(r["number"]), f"{r[OBJECTIVE]:.4g}", _num(r.get("val_esr_geomean_floored"), ".4g"),
                      _num(r.get("val_esr_mean_scored_settings"), ".4g"),
                      _num(r.get("val_esr_worst_scored_setting"), ".4g"),
                      _num(r.get("samples_trained", math.nan) / 1e6, ".1f"), _num(r.get("macs_per_sample"), ".0f"),
                      _num(r.get("rtf"), ".1f"), *[_short(r.get(p)) for p in params]])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines.append(f"best {len(done)} complete trial(s) by validation ESR (tail-aware; geometric mean floored at "
                 "1e-3, mean and worst over the scored knob settings):")
    lines.extend("  " + "  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in table)
    lines.extend(rung_lines(study))
    failed = [r for r in rows if r["state"] == "FAIL" and r.get("error")]
    for r in failed[:5]:
        lines.append(f"  trial {r['number']} failed: {str(r['error'])[:150]}")
    return "\n".join(lines)


def rung_lines(study: Any) -> list[str]:
    """How far trials trained, in training samples: the intermediate steps every trial reported
    (studies/pruning.py), counted at each step some trial was stopped at or finished at."""
    reached = [max(t.intermediate_values) for t in study.get_trials(deepcopy=False) if t.intermediate_values]
    if not reached:
        return []
    levels = sorted(set(reached))
    if len(levels) > 8:  # many distinct stops (median pruning): quartiles instead of every level
        levels = sorted({levels[round(q * (len(levels) - 1))] for q in (0, 0.25, 0.5, 0.75, 1)})
    counts = ", ".join(f"{sum(r >= level for r in reached)} reached {level / 1e6:.3g}M" for level in levels)
    return [f"training samples reported by the {len(reached)} trials that validated: {counts}"]


def report_study(study: Any, spec: Any, tracking_uri: str, parent_run_id: str | None, quiet: bool = False) -> str:
    """Write the report files, log them to the parent run (if any) and print the summary."""
    rows = trial_rows(study)
    text = summary_text(study, rows, fingerprint=spec_fingerprint(spec))
    with tempfile.TemporaryDirectory(prefix="ampstudy-report-") as tmp:
        out = Path(tmp)
        figures = [plot_history(rows, out / "optimization_history.png"),
                   plot_importances(study, out / "param_importances.png"), plot_pareto(rows, out / "pareto_front.png")]
        files = [write_csv(rows, out / "trials.csv"), *figures]
        (out / "summary.txt").write_text(text + "\n")
        files.append(out / "summary.txt")
        if parent_run_id:
            client = tracking.client(tracking_uri)
            files.append(_write_page(client, tracking_uri, study, parent_run_id, rows, text,
                                     [f for f in figures if f is not None], out))
            for file in files:
                if file is not None:
                    client.log_artifact(parent_run_id, str(file), "study")
            done = complete_rows(rows)
            if done:
                client.log_metric(parent_run_id, f"best_trial_{OBJECTIVE}", min(r[OBJECTIVE] for r in done))
            for state in ("COMPLETE", "PRUNED", "FAIL"):
                client.log_metric(parent_run_id, f"trials_{state.lower()}", sum(r["state"] == state for r in rows))
            describe_parent(client, tracking_uri, parent_run_id, spec, rows)
    if not quiet:
        print(text)
        if parent_run_id:
            experiment = tracking.client(tracking_uri).get_run(parent_run_id).info.experiment_id
            print(f"report (HTML, with the best trial's audio) logged to MLflow run {parent_run_id}:\n  "
                  f"{tracking.run_link(experiment, parent_run_id, tracking_uri, 'artifacts/study/report.html')}")
            print("browse the trials, best first:\n  "
                  f"{tracking.link(runs_view.trials_route(experiment, study.study_name), tracking_uri)}")
            if tracking.ui_command(tracking_uri):
                print(f"  (serve the MLflow UI first: {tracking.ui_command(tracking_uri)})")
    return text


def ranked_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The complete trials that have an MLflow run, best objective first."""
    return sorted((r for r in complete_rows(rows) if r.get(mlflow_runs.RUN_ID_ATTR)), key=lambda r: r[OBJECTIVE])


def best_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    ranked = ranked_rows(rows)
    return ranked[0] if ranked else None


def _write_page(client: Any, tracking_uri: str, study: Any, parent_run_id: str, rows: list[dict[str, Any]],
                text: str, figures: list[Path], out: Path) -> Path:
    experiment = client.get_run(parent_run_id).info.experiment_id
    links = {r[mlflow_runs.RUN_ID_ATTR]: tracking.run_link(experiment, r[mlflow_runs.RUN_ID_ATTR], tracking_uri)
             for r in rows if r.get(mlflow_runs.RUN_ID_ATTR)}
    best = best_row(rows)
    audio_dirs: list[Path] = []
    plots: list[Path] = []
    if best is not None:
        run_id = best[mlflow_runs.RUN_ID_ATTR]
        names = {a.path for a in client.list_artifacts(run_id)}
        if "audio" in names:
            audio_dirs = sorted(p for p in Path(client.download_artifacts(run_id, "audio", str(out))).iterdir()
                                if p.is_dir())
        if "plots" in names:
            plots = sorted(Path(client.download_artifacts(run_id, "plots", str(out))).glob("*.png"))[:1]
    page = study_page(f"Study '{study.study_name}'", text, rows, links, best, audio_dirs, plots, figures,
                      tracking.ui_base(tracking_uri))
    path = out / "report.html"
    path.write_text(page)
    return path


def describe_parent(client: Any, tracking_uri: str, parent_run_id: str, spec: Any, rows: list[dict[str, Any]]) -> None:
    """The parent run's description: what the study is, its trials (linked, best first), where the
    page is and what was registered. Its links are routes (relative): they open on whichever host
    and port serves the UI."""
    experiment = client.get_run(parent_run_id).info.experiment_id
    counts = ", ".join(f"{sum(r['state'] == s for r in rows)} {s.lower()}" for s in ("COMPLETE", "PRUNED", "FAIL"))
    report = tracking.run_route(experiment, parent_run_id, "artifacts/study/report.html")
    runs_view.save_trials_view(tracking_uri, experiment, spec.name, OBJECTIVE)
    lines = [spec.options.description or f"Optuna study '{spec.name}'.", "",
             f"{len(rows)} trials ({counts}), one MLflow run each: [browse them, best first]"
             f"({runs_view.trials_route(experiment, spec.name)}). Study settings: this run's parameters. "
             f"Report with the best trial's audio: [study/report.html]({report}).", ""]
    ranked = ranked_rows(rows)
    if ranked:
        best = ranked[0]
        client.set_tag(parent_run_id, "best_trial", str(best["number"]))
        client.set_tag(parent_run_id, "best_trial_run_id", best[mlflow_runs.RUN_ID_ATTR])
        lines += [f"Best complete trials (validation ESR, tail-aware; all {len(ranked)} in the trials list):", "",
                  *(f"{place}. [trial #{r['number']}]({tracking.run_route(experiment, r[mlflow_runs.RUN_ID_ATTR])}): "
                    f"{r[OBJECTIVE]:.4g}" for place, r in enumerate(ranked[:TRIALS_IN_DESCRIPTION], 1)), ""]
    registered = client.get_run(parent_run_id).data.tags.get(REGISTERED_TAG)
    if registered:
        name, _, version = registered.rpartition("/")
        lines.append(f"Registered: [{name} v{version}]({tracking.version_route(name, version)}) (from the best "
                     "trial's run: MLflow lists it there, under Registered models).")
    client.set_tag(parent_run_id, "mlflow.note.content", "\n".join(lines))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _num(value: Any, fmt: str) -> str:
    return format(value, fmt) if _finite(value) else "-"


def _short(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
