"""What makes a study's trials comparable: a fingerprint of its search space, base run config and
objective, recorded in the study so that a resume with an edited study file cannot mix trials.

Fields are the flattened settings (`base.train.max_epochs`, `space.model.channels`,
`objective.min_rtf`, ...) except those that do not change a trained model: `base.run_name`,
`base.data.data_dir`, `base.data.workers` and the plumbing/budget train fields
(`max_minutes`, `threads`, `audio_seconds`). The study keeps the list of fingerprints it was run
with (user attr `fingerprints`, oldest first, each with its fields, so a refusal can name what
changed); every trial carries the fingerprint it ran under (user attr and MLflow tag).

Resuming with another fingerprint stops with one line naming the changed fields. With
`--allow-changed-space` the study continues on purpose under the new fingerprint, except where
Optuna itself cannot: a searched parameter whose kind, `log` or `choices` changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from foundation.configs import flatten, to_dict
from foundation.errors import AmpStudyError
from studies.space import FIXED_TRAIN_FIELDS
from studies.spec import StudySpec
from training.evaluate import ESR_DEFINITION

FINGERPRINT_ATTR = "fingerprint"  # study user attr (current) and trial user attr (the one it ran under)
HISTORY_ATTR = "fingerprints"  # study user attr: [{"hash": ..., "fields": {...}}], oldest first
ALLOW_FLAG = "--allow-changed-space"
NOT_COMPARED = ("base.run_name", "base.data.data_dir", "base.data.workers",
                *(f"base.train.{name}" for name in FIXED_TRAIN_FIELDS))
NAMED_AT_MOST = 6


def fingerprint_fields(spec: StudySpec) -> dict[str, str]:
    """{dotted field: JSON of its value} of everything that makes trials comparable."""
    fields = {f"base.{k}": v for k, v in flatten(to_dict(spec.base)).items()}
    fields.update({f"objective.{k}": v for k, v in to_dict(spec.objective).items()})
    fields["objective.esr_definition"] = ESR_DEFINITION  # what val_esr means (training/evaluate.py)
    for param in spec.space:
        dim = {k: v for k, v in to_dict(param.dim).items() if k != "when"}
        fields[f"space.{param.name}"] = {"kind": param.kind, **dim, "when": [list(w) for w in param.when]}
    return {k: json.dumps(v, sort_keys=True, default=str) for k, v in fields.items() if k not in NOT_COMPARED}


def fingerprint_of(fields: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def spec_fingerprint(spec: StudySpec) -> str:
    return fingerprint_of(fingerprint_fields(spec))


def changed_fields(old: dict[str, str], new: dict[str, str]) -> list[str]:
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def _named(fields: list[str]) -> str:
    more = len(fields) - NAMED_AT_MOST
    return ", ".join(fields[:NAMED_AT_MOST]) + (f" and {more} more" if more > 0 else "")


def optuna_conflicts(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """Searched parameters Optuna cannot continue with: changed kind, log scale or choices."""
    conflicts = []
    for key in sorted(k for k in old.keys() & new.keys() if k.startswith("space.")):
        a, b = json.loads(old[key]), json.loads(new[key])
        if a["kind"] != b["kind"] or a.get("log") != b.get("log") or \
                (a["kind"] == "categorical" and a.get("choices") != b.get("choices")):
            conflicts.append(key)
    return conflicts


def trial_fingerprint(trial: Any, study_user_attrs: dict[str, Any]) -> str:
    """The fingerprint a trial ran under (trials from before fingerprints: the study's first)."""
    history = study_user_attrs.get(HISTORY_ATTR) or [{"hash": ""}]
    return str(trial.user_attrs.get(FINGERPRINT_ATTR, history[0]["hash"]))


def adopt_fingerprint(study: Any, spec: StudySpec, allow_changed: bool = False) -> str:
    """Record the study file's fingerprint in a new study, check it on a resume; returns it.
    Call under the study's storage lock (two workers resuming at once append once each)."""
    fields = fingerprint_fields(spec)
    digest = fingerprint_of(fields)
    history = list(study.user_attrs.get(HISTORY_ATTR) or [])
    if history and history[-1]["hash"] == digest:
        return digest
    if history:
        previous = history[-1]
        changed = changed_fields(previous["fields"], fields)
        where = spec.path or spec.name
        if not allow_changed:
            raise AmpStudyError(
                f"{where}: study '{spec.name}' was run with other settings (changed: {_named(changed)}); "
                f"to keep its trials comparable start a new study (give it a new name = \"...\"), or continue "
                f"on purpose with {ALLOW_FLAG} (new trials are tagged fingerprint {digest})")
        conflicts = sorted({c for old in history for c in optuna_conflicts(old["fields"], fields)})
        if conflicts:
            raise AmpStudyError(
                f"{where}: the kind, log scale or choices of {_named(conflicts)} changed, which Optuna cannot "
                f"mix in one study (every new trial would fail); start a new study (give it a new name = \"...\")")
        logging.getLogger("ampstudy").warning(
            f"study '{spec.name}' continues with changed settings ({_named(changed)}); new trials are tagged "
            f"fingerprint {digest}, earlier ones {previous['hash']}; promote compares only one fingerprint")
    study.set_user_attr(HISTORY_ATTR, [*history, {"hash": digest, "fields": fields}])
    study.set_user_attr(FINGERPRINT_ATTR, digest)
    return digest
