"""`ampstudy promote`: test the study's best trial and register it; move `champion` only past the gate.

Steps: pick the best COMPLETE trial (lowest tail-aware validation ESR) that meets the compute
constraint, among the trials run with the study file's settings (its fingerprint,
studies/fingerprint.py; `--all-fingerprints` compares trials of every setting, `--trial N` takes
that trial); evaluate it on the held-out test split; log it as an MLflow model of the trial's run
(one that works without ampstudy: training.mlflow_model) and register it as a new version of the
registered model, with tags and a description a person can read in the UI (studies.model_card);
then, under a lock, evaluate the current champion on the same test split with the same code and
move the alias only if the challenger passes studies/champion_gate.py (better by a margin, not
worse at its worst setting, as good at half the settings or more). A champion that cannot be
evaluated keeps the alias and the command fails, unless `--replace-unevaluable-champion`.

Every promotion evaluates on the study's test settings once more, so a champion chosen over many
promotions is, a little more each time, selected on test. The registered model counts the
promotions per dataset (tag `test_uses/<dataset hash>`) and promote says so when the count grows.
Aliases only (model stages are deprecated).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from foundation.errors import AmpStudyError
from foundation.files import file_lock
from foundation.uris import sqlite_path
from studies import mlflow_runs
from studies.champion_gate import GATE_MARGIN, verdict
from studies.fingerprint import spec_fingerprint, trial_fingerprint
from studies.model_card import version_description, version_tags
from studies.runner import existing_study_storage, resolve_tracking_uri
from studies.spec import StudySpec
from studies.storage import is_postgres, open_storage
from training import artifacts, tracking
from training.evaluate import ESR_DEFINITION, ESR_DEFINITION_TAG, PRIMARY, evaluate_model, finite_numbers
from training.mlflow_model import log_amp_model
from training.model_io import downloaded_model_dir, load_model
from training.nam_export import export_command

ALIAS = "champion"
TEST_USES_TAG = "test_uses/"  # + dataset hash: registered-model tag, promotions evaluated on that test split
TEST_USES_NOTICE = 3  # from this many uses of one test split on, promote says what that means
REPLACE_FLAG = "--replace-unevaluable-champion"
MODEL_TAGS = {"amp": "Fender Bassman 5F6-A preamp (ngspice)", "task": "guitar amp modelling",
              "input": "mono DI, float32", "knobs": "volume, treble, bass, middle (0..1)", "made_by": "ampstudy"}


@dataclass(frozen=True)
class Promotion:
    trial_number: int
    version: str
    test_esr: float
    champion_before: str | None  # version that held the alias before, if any
    champion_after: str
    moved: bool
    message: str


def pick_trial(study: Any, max_macs: float | None, min_rtf: float | None, trial_number: int | None = None,
               fingerprint: str | None = None) -> Any:
    """The COMPLETE trial with the lowest validation ESR meeting the limits (or the given number),
    among the trials run under `fingerprint` (None: all; a named trial is taken whatever it ran under)."""
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if t.values and math.isfinite(t.values[0]) and t.user_attrs.get(mlflow_runs.RUN_ID_ATTR)]
    if trial_number is not None:
        trials = [t for t in trials if t.number == trial_number]
        if not trials:
            raise AmpStudyError(f"trial {trial_number} of study '{study.study_name}' is not a complete tracked trial")
    elif fingerprint is not None:
        attrs = study.user_attrs
        others = sorted({trial_fingerprint(t, attrs) for t in trials} - {fingerprint})
        trials = [t for t in trials if trial_fingerprint(t, attrs) == fingerprint]
        if not trials and others:
            raise AmpStudyError(
                f"study '{study.study_name}' has no complete trial run with this study file's settings (fingerprint "
                f"{fingerprint}), only under {', '.join(others)}; run trials with this file, or pass "
                "--all-fingerprints to compare trials run under different settings")
    if max_macs:
        trials = [t for t in trials if t.user_attrs.get("macs_per_sample", math.inf) <= max_macs]
    if min_rtf:
        trials = [t for t in trials if t.user_attrs.get("rtf", 0.0) >= min_rtf]
    if not trials:
        limits = " and ".join(x for x in (max_macs and f"MACs/sample <= {max_macs:g}",
                                          min_rtf and f"real-time factor >= {min_rtf:g}") if x)
        raise AmpStudyError(f"study '{study.study_name}' has no complete trial" + (f" with {limits}" if limits else "")
                            + "; run more trials or relax the limit")
    return min(trials, key=lambda t: t.values[0])


@contextlib.contextmanager
def registry_lock(tracking_uri: str, model_name: str) -> Iterator[None]:
    """Serialise promotions of one registered model: file lock beside a SQLite store, advisory lock on
    PostgreSQL; other stores (an MLflow server) rely on the re-check after setting the alias."""
    db = sqlite_path(tracking_uri)
    if db is not None:
        with file_lock(db.parent / f".promote-{model_name}.lock", timeout=900):
            yield
    elif is_postgres(tracking_uri):
        from studies.storage import storage_lock

        with storage_lock(tracking_uri, f"promote:{model_name}", timeout=900):
            yield
    else:
        yield


def promote(spec: StudySpec, *, storage_url: str | None = None, tracking_uri: str | None = None,
            max_macs: float | None = None, min_rtf: float | None = None, model_name: str | None = None,
            trial_number: int | None = None, all_fingerprints: bool = False, margin: float = GATE_MARGIN,
            replace_unevaluable: bool = False) -> Promotion:
    import optuna

    url = existing_study_storage(spec, storage_url)
    uri = resolve_tracking_uri(spec, tracking_uri)
    name = model_name or spec.options.registered_model
    if max_macs is None and min_rtf is None:  # default to the study's own constraint
        max_macs = spec.objective.max_macs_per_sample or None
        min_rtf = spec.objective.min_rtf or None
    study = optuna.load_study(study_name=spec.name, storage=open_storage(url))
    trial = pick_trial(study, max_macs, min_rtf, trial_number, None if all_fingerprints else spec_fingerprint(spec))
    run_id = trial.user_attrs[mlflow_runs.RUN_ID_ATTR]
    client = tracking.client(uri)
    print(f"best trial: #{trial.number}  val ESR (tail-aware) {trial.values[0]:.5g}  "
          f"MACs/sample {trial.user_attrs.get('macs_per_sample', float('nan')):.0f}  run {run_id}")
    with downloaded_model_dir(f"runs:/{run_id}/model") as model_dir:
        loaded = load_model(model_dir)
        test = evaluate_model(loaded.net, loaded.run_config.data, split="test")
        test_esr = float(test[PRIMARY])
        if not math.isfinite(test_esr):
            raise AmpStudyError("the test split gave no ESR; give base.data.audio.region_split a test share > 0")
        print(describe_test(test))
        for key, value in finite_numbers(test).items():
            client.log_metric(run_id, f"test_{key}", value)
        # ESR per test setting (a table and a figure in the trial's run): the UI shows it, and an export
        # at one of these settings records its own number (training/nam_export.py)
        artifacts.log_settings_table(client, run_id, test.get("settings_table") or [], "test")
        tags = version_tags(spec.name, trial, run_id, test, loaded)
        data_hash = tags["data_hash"]
        with registry_lock(uri, name):  # also makes "already registered?" + register one step
            version = _registered_version(client, name, run_id)
            if version is None:
                version = _register(client, trial_model_uri(client, run_id, model_dir), name, tags)
                client.update_model_version(name, version, description=version_description(
                    name, version, tags, test, loaded))
            else:
                print(f"trial #{trial.number} is already {name} v{version}; not registering it again")
            uses = _count_test_use(client, name, data_hash)
            result = _maybe_move_champion(client, name, version, test, data_hash, loaded.run_config.data, margin,
                                          replace_unevaluable)
    print(result.message)
    if uses >= TEST_USES_NOTICE:
        print(f"note: the test settings of dataset {data_hash} have now decided {uses} promotions of {name}; a "
              "champion picked over many looks at one test split is partly selected on it. For an unbiased "
              "number, test the champion on settings no promotion has seen (a new base.data.seed)")
    _link_parent_run(client, uri, study, spec, name, version)
    print(f"registered version: {tracking.version_link(name, version, uri)}")
    if result.champion_after == version:  # a champion of another family is told by its own promotion
        command = export_command(f"models:/{name}@{ALIAS}", loaded, name)
        if command:
            print(f"play the champion in Neural Amp Modeler (one .nam file per knob setting):\n  {command}")
    return Promotion(trial.number, version, test_esr, result.champion_before, result.champion_after,
                     result.moved, result.message)


def trial_model_uri(client: Any, run_id: str, model_dir: Any) -> str:
    """The MLflow model `train()` logged for the run (models:/<id>); logged now for older runs."""
    experiment = client.get_run(run_id).info.experiment_id
    logged = client.search_logged_models(experiment_ids=[experiment], filter_string=f"source_run_id = '{run_id}'",
                                         max_results=1)
    return f"models:/{logged[0].model_id}" if logged else log_amp_model(run_id, model_dir)


def _link_parent_run(client: Any, uri: str, study: Any, spec: StudySpec, name: str, version: str) -> None:
    """The study's parent run names the version registered from it (a tag and a link in its description)."""
    from studies.report import REGISTERED_TAG, describe_parent, trial_rows

    parent = study.user_attrs.get(mlflow_runs.PARENT_RUN_ATTR)
    if parent:
        client.set_tag(parent, REGISTERED_TAG, f"{name}/{version}")
        describe_parent(client, uri, parent, spec, trial_rows(study))


def describe_test(test: dict[str, Any]) -> str:
    """One line of test numbers: the gate's (unseen test settings when there are any), seen vs unseen."""
    from training.run_info import esr_text

    where = "" if test.get("scored_on") == "unseen" else " (the data holds no test settings: unseen audio)"
    return f"test ESR {esr_text(test)}{where}"


def _registered_version(client: Any, name: str, run_id: str) -> str | None:
    """The version already registered from this trial's run, if a promotion did it before."""
    versions = [v for v in client.search_model_versions(f"name = '{name}'")
                if v.tags.get("mlflow_run_id") == run_id]
    return str(min(int(v.version) for v in versions)) if versions else None


def _register(client: Any, model_uri: str, name: str, tags: dict[str, str]) -> str:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="WaveNet models of the SPICE Bassman 5F6-A preamp; "
                                                         "alias 'champion' = lowest test ESR so far",
                                       tags=MODEL_TAGS)
    except MlflowException:
        pass  # exists (possibly created by a racing promotion a moment ago)
    return str(mlflow.register_model(model_uri, name, tags=tags).version)


@dataclass(frozen=True)
class _AliasDecision:
    champion_before: str | None
    champion_after: str
    moved: bool
    message: str


def _maybe_move_champion(client: Any, name: str, version: str, test: dict[str, Any], data_hash: str,
                         data_cfg: Any, margin: float, replace_unevaluable: bool) -> _AliasDecision:
    test_esr = float(test[PRIMARY])
    champion = _current_champion(client, name)  # its .version is an int in some MLflow calls: use str()
    if champion is not None and str(champion.version) == version:
        return _AliasDecision(version, version, False, f"v{version} already is '{ALIAS}' (test ESR {test_esr:.5g})")
    if champion is None:
        client.set_registered_model_alias(name, ALIAS, version)
        decision = _AliasDecision(None, version, True, f"{name} v{version} is the first '{ALIAS}' "
                                                       f"(test ESR {test_esr:.5g})")
    else:
        decision = _challenge(client, name, version, str(champion.version), test, data_cfg, margin,
                              replace_unevaluable)
    if decision.moved:
        _recheck(client, name, version, test_esr, data_hash)
    return decision


def _challenge(client: Any, name: str, version: str, before: str, test: dict[str, Any], data_cfg: Any,
               margin: float, replace_unevaluable: bool) -> _AliasDecision:
    """The reigning champion `before` against `version`: evaluated alike, then the gate decides."""
    theirs = _evaluate_champion(name, before, data_cfg)
    if theirs is None:
        if not replace_unevaluable:
            raise AmpStudyError(
                f"'{ALIAS}' stays v{before}: it cannot be evaluated on this study's test split, so v{version} "
                f"(registered, test ESR {float(test[PRIMARY]):.5g}) cannot be compared with it; pass {REPLACE_FLAG} "
                "to move the alias anyway")
        client.set_registered_model_alias(name, ALIAS, version)
        return _AliasDecision(before, version, True, f"'{ALIAS}' moved v{before} -> v{version} ({REPLACE_FLAG}: "
                                                     f"v{before} could not be evaluated)")
    gate = verdict(test, theirs, margin)
    if gate.moves:
        client.set_registered_model_alias(name, ALIAS, version)
        return _AliasDecision(before, version, True, f"'{ALIAS}' moved v{before} -> v{version}: {gate.reason}")
    return _AliasDecision(before, before, False, f"'{ALIAS}' stays v{before}; v{version} is registered but "
                                                 f"{gate.reason}")


def _current_champion(client: Any, name: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:
        return None


def _evaluate_champion(name: str, version: str, data_cfg: Any) -> dict[str, Any] | None:
    """The champion's numbers on our test split, by the code that tested the challenger; None (with the
    reason printed) when it cannot run there (files missing, another sample rate, ...)."""
    print(f"evaluating champion v{version} on this study's test split")
    try:
        with downloaded_model_dir(f"models:/{name}/{version}") as directory:
            loaded = load_model(directory)
        return evaluate_model(loaded.net, data_cfg, split="test", progress=False)
    except Exception as err:
        print(f"could not evaluate champion v{version}: {type(err).__name__}: {str(err)[:300]}")
        return None


def _count_test_use(client: Any, name: str, data_hash: str) -> int:
    """One more promotion evaluated on this dataset's test split; returns the count (under the lock)."""
    key = f"{TEST_USES_TAG}{data_hash}"
    uses = int(client.get_registered_model(name).tags.get(key, "0")) + 1
    client.set_registered_model_tag(name, key, str(uses))
    return uses


def _recheck(client: Any, name: str, version: str, test_esr: float, data_hash: str, rounds: int = 3) -> None:
    """After moving the alias to `version`, re-read it: if a racing promotion (on a store without
    locks) left a version with a worse test ESR on the same data and definition there, put ours back.
    A no-op under the lock."""
    for _ in range(rounds):
        time.sleep(0.2)
        champion = _current_champion(client, name)
        if champion is None or str(champion.version) == version:
            return
        tags = champion.tags
        if tags.get("data_hash") != data_hash or tags.get(ESR_DEFINITION_TAG) != ESR_DEFINITION:
            return
        if float(tags.get(f"test_{PRIMARY}", "inf")) <= test_esr:
            return
        client.set_registered_model_alias(name, ALIAS, version)
