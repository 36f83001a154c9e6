"""`ampstudy study run|report` and `ampstudy promote`, registered into the main CLI by add_commands."""

from __future__ import annotations

import argparse

from ampstudy.options import number
from studies.champion_gate import GATE_MARGIN

STORAGE_HELP = ("Optuna storage URL (default: the study file's storage.url, else sqlite:///mlruns/optuna.db for "
                "one process or journal:mlruns/optuna-journal.log for --workers > 1; an existing study is found "
                "in either). Many machines: postgresql://USER:PASSWORD@HOST/DB")
TRACKING_HELP = ("MLflow tracking URI (default: tracking_uri in the study file, MLFLOW_TRACKING_URI, or "
                 "sqlite:///mlruns/mlflow.db)")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `study` (with `run` and `report`) and `promote` to the ampstudy subcommands."""
    raw = argparse.RawDescriptionHelpFormatter
    study = subparsers.add_parser(
        "study", help="run or report an Optuna study of WaveNet variants (tracked in MLflow)",
        description="Optuna studies defined by TOML files (see studies/README.md); each trial is one "
                    "`train()` run nested under the study's MLflow parent run.",
        epilog="examples:\n  ampstudy study run studies/tiny.toml\n"
               "  ampstudy study run studies/bassman_wavenet.toml --workers 4\n"
               "  ampstudy study report studies/bassman_wavenet.toml", formatter_class=raw)
    commands = study.add_subparsers(title="study commands", metavar="COMMAND")

    run = commands.add_parser(
        "run", help="create or resume a study and run its trials",
        description="Validate the study file, simulate the dataset once, then run trials until the study has "
                    "its budget of trials (budget.n_trials, counted over all runs and workers) or the timeout "
                    "passes. Re-running the same command resumes: finished trials are kept, trials of a killed "
                    "worker are failed and re-queued. At the end the report is logged to the parent run.",
        epilog="examples:\n  ampstudy study run studies/tiny.toml --trials 6\n"
               "  ampstudy study run studies/bassman_wavenet.toml --workers 4 --timeout 7200\n"
               "  # on each of several machines sharing one PostgreSQL server and MLflow tracking server:\n"
               "  MLFLOW_TRACKING_URI=http://mlflow:5000 ampstudy study run studies/bassman_wavenet.toml \\\n"
               "      --storage postgresql://optuna:secret@db/optuna", formatter_class=raw)
    run.add_argument("study_file", metavar="STUDY", help="study TOML file, e.g. studies/tiny.toml")
    run.add_argument("--storage", metavar="URL", help=STORAGE_HELP)
    run.add_argument("--trials", type=number(int, low=0), metavar="N",
                     help="total trials the study should have, over all runs (default: budget.n_trials)")
    run.add_argument("--timeout", type=number(low=0, unit="seconds"), metavar="S",
                     help="stop starting trials after S seconds (default: budget.timeout_minutes)")
    run.add_argument("--workers", type=number(int, low=1, high=256), default=1, metavar="N",
                     help="local worker processes sharing the study (default 1); with GPUs, one GPU each")
    run.add_argument("--share-gpus", action="store_true",
                     help="let --workers N exceed the GPUs of this machine: workers take the GPUs round robin "
                          "(default: each worker gets its own GPU, CUDA_VISIBLE_DEVICES, and more workers than "
                          "GPUs is refused)")
    run.add_argument("--tracking-uri", metavar="URI", help=TRACKING_HELP)
    run.add_argument("--allow-changed-space", action="store_true",
                     help="resume although the search space, base config or objective changed since the study "
                          "was run: new trials are tagged with the new fingerprint and promote compares only "
                          "trials of one fingerprint (without this flag such a resume stops and names the changes)")
    run.set_defaults(handler=cmd_study_run)

    report = commands.add_parser(
        "report", help="print a study's summary and log its report to MLflow",
        description="Trials table (CSV), optimisation history, parameter importances and the Pareto front "
                    "(validation ESR vs MACs/sample) as PNGs, logged to the study's MLflow parent run under "
                    "study/; a summary table is printed.",
        epilog="example: ampstudy study report studies/tiny.toml", formatter_class=raw)
    report.add_argument("study_file", metavar="STUDY")
    report.add_argument("--storage", metavar="URL", help=STORAGE_HELP)
    report.add_argument("--tracking-uri", metavar="URI", help=TRACKING_HELP)
    report.set_defaults(handler=cmd_study_report)

    promote = subparsers.add_parser(
        "promote", help="test a study's best trial, register it, move alias 'champion' if it is better",
        description="Pick the COMPLETE trial with the lowest tail-aware validation ESR meeting the compute limit "
                    "(default: the study file's constraint), evaluate it on the held-out test split, log it as an "
                    "MLflow pyfunc model, register a new version (tags: study, trial, test_esr_tail_aware and the "
                    "other test numbers, macs_per_sample, rtf, data_hash), evaluate the current champion on the "
                    "same test split and point alias 'champion' at the new version only if it wins: better by "
                    "--margin, not worse at its worst knob setting, as good at half the settings or more. Load "
                    "it with mlflow.pyfunc.load_model('models:/bassman-wavenet@champion').",
        epilog="examples:\n  ampstudy promote studies/bassman_wavenet.toml\n"
               "  ampstudy promote studies/bassman_wavenet.toml --max-macs 2000   # a cheaper model\n"
               "  ampstudy promote studies/bassman_wavenet.toml --min-rtf 20", formatter_class=raw)
    promote.add_argument("study_file", metavar="STUDY")
    promote.add_argument("--max-macs", type=number(low=0, above=True), metavar="N",
                         help="only trials with at most N MACs per sample")
    promote.add_argument("--min-rtf", type=number(low=0, above=True), metavar="X",
                         help="only trials running at least X times faster than real time (measured in training)")
    promote.add_argument("--trial", type=number(int, low=0), metavar="N",
                         help="promote this trial instead of the best one")
    promote.add_argument("--all-fingerprints", action="store_true",
                         help="compare trials run under every setting of the study (see study run "
                              "--allow-changed-space); default: only trials run with this study file's settings")
    promote.add_argument("--margin", type=number(low=0, high=10), metavar="F", default=GATE_MARGIN,
                         help=f"how much lower (a fraction) the challenger's tail-aware test ESR must be to take the "
                              f"alias (default {GATE_MARGIN:g}: the seed-to-seed spread of one configuration, "
                              "benchmarks/results/seed_spread.md)")
    promote.add_argument("--replace-unevaluable-champion", action="store_true",
                         help="move the alias even when the current champion cannot be evaluated on this study's "
                              "test split (default: the alias stays and the command fails)")
    promote.add_argument("--model-name", metavar="NAME", help="registered model name (default: registered_model "
                                                              "in the study file, bassman-wavenet)")
    promote.add_argument("--storage", metavar="URL", help=STORAGE_HELP)
    promote.add_argument("--tracking-uri", metavar="URI", help=TRACKING_HELP)
    promote.set_defaults(handler=cmd_promote)
    study.set_defaults(handler=lambda args: study.print_help() or 2)


def cmd_study_run(args: argparse.Namespace) -> int:
    from studies.runner import run_study
    from studies.spec import load_study_spec

    spec = load_study_spec(args.study_file)
    run_study(spec, storage_url=args.storage, n_trials=args.trials,
              timeout_minutes=None if args.timeout is None else args.timeout / 60,
              workers=args.workers, tracking_uri=args.tracking_uri, allow_changed_space=args.allow_changed_space,
              share_gpus=args.share_gpus)
    return 0


def cmd_study_report(args: argparse.Namespace) -> int:
    import optuna

    from studies import mlflow_runs
    from studies.report import report_study
    from studies.runner import existing_study_storage, resolve_tracking_uri
    from studies.spec import load_study_spec
    from studies.storage import open_storage

    spec = load_study_spec(args.study_file)
    url = existing_study_storage(spec, args.storage)
    study = optuna.load_study(study_name=spec.name, storage=open_storage(url))
    report_study(study, spec, resolve_tracking_uri(spec, args.tracking_uri),
                 study.user_attrs.get(mlflow_runs.PARENT_RUN_ATTR))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from studies.promote import promote
    from studies.spec import load_study_spec

    spec = load_study_spec(args.study_file)
    promote(spec, storage_url=args.storage, tracking_uri=args.tracking_uri, max_macs=args.max_macs,
            min_rtf=args.min_rtf, model_name=args.model_name, trial_number=args.trial,
            all_fingerprints=args.all_fingerprints, margin=args.margin,
            replace_unevaluable=args.replace_unevaluable_champion)
    return 0
