"""The study's trials as the MLflow UI's runs table shows them: a saved view of the experiment.

MLflow 3.17 keeps saved views ("Views" above the runs table) as experiment tags
`mlflow.sharedViewState.<key>`: a JSON envelope (name, times, state) whose state is the table's
filter, sort and columns; a route with `viewStateShareKey=<key>` opens the table laid out so. We
write one per study, so the link we print opens on the study's trials only, best first, with the
columns a researcher ranks by: the objective, the worst scored knob setting, compute (MACs per
sample, real-time factor, parameters) and the trial's state (COMPLETE, PRUNED, FAIL: a pruned
trial ends its MLflow run FINISHED, with the same green check as a complete one). Without the
view, MLflow's default table shows no metric at all. Writing it again (every run and report of
the study) is harmless: same key, same layout.
"""

from __future__ import annotations

import json
import re
import time

from studies.mlflow_runs import ROLE_TAG, STATE_TAG, STUDY_TAG
from training import tracking

VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # MLflow UI 3.x: saved views and shared view states
# (column, width in pixels), in this order after the run's name: wide enough that a float's digits
# and the header are read, not cut off. MLflow's own columns (start time, duration) follow.
COLUMNS = (
    (f"tags.`{STATE_TAG}`", 120),
    ("metrics.`best_{objective}`", 200),
    ("metrics.`best_val_esr_worst_scored_setting`", 230),
    ("metrics.`cost_macs_per_sample`", 170),
    ("metrics.`cost_rtf`", 170),
    ("metrics.`cost_params`", 110),
    ("metrics.`samples_trained`", 150),
)
RUN_NAME_COLUMN = ("attributes.`Run Name`", 230)


def view_key(study_name: str) -> str:
    """The saved view's key (a tag-key suffix: letters, digits, '-' and '_')."""
    return "ampstudy-" + re.sub(r"[^A-Za-z0-9_-]", "_", study_name)


def trials_filter(study_name: str) -> str:
    """MLflow's run filter for the study's trial runs (its study run left out)."""
    return f"tags.`{STUDY_TAG}` = '{study_name}' and tags.`{ROLE_TAG}` = 'trial'"


def trials_view_state(study_name: str, objective: str) -> dict:
    """The runs table's state (the keys MLflow's UI saves): filter, sort, columns and widths."""
    columns = [(name.format(objective=objective), width) for name, width in COLUMNS]
    return {
        "searchFilter": trials_filter(study_name),
        "orderByKey": f"metrics.`best_{objective}`",
        "orderByAsc": True,  # lowest ESR first; trials without it (pruned early, failed) last
        "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
        "selectedColumns": [name for name, _ in columns],
        # MLflow applies a width only to a column named in the order
        "columnOrder": [RUN_NAME_COLUMN[0], *(name for name, _ in columns), "runDateAndNestInfo", "duration"],
        "columnWidths": dict([RUN_NAME_COLUMN, *columns]),
        "runsHiddenMode": "SHOW_ALL", "viewMaximized": False, "runListHidden": False,
        "isAccordionReordered": False, "useGroupedValuesInCharts": True, "hideEmptyCharts": True,
        "groupBy": None, "groupsExpanded": {},
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
    }


def save_trials_view(tracking_uri: str, experiment_id: str, study_name: str, objective: str) -> str:
    """Write (or rewrite) the study's saved view on its experiment; returns its key."""
    key = view_key(study_name)
    now = int(time.time() * 1000)
    envelope = {"name": f"{study_name}: trials, best first", "createdAt": now, "updatedAt": now,
                "state": json.dumps(trials_view_state(study_name, objective))}
    tracking.client(tracking_uri).set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + key, json.dumps(envelope))
    return key


def trials_route(experiment_id: str, study_name: str) -> str:
    """The study's trials in the UI, laid out by its saved view (save_trials_view writes it)."""
    return tracking.runs_route(experiment_id, view_key(study_name))
