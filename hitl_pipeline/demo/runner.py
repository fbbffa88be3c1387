"""The demo: replay a drifting stream through real Dagster runs until the loop closes.

Headless (``--no-ui``), each weekly cycle lands a batch and then evaluates the very
sensors and schedule the Dagster daemon would, executing the runs they request in this
process against the loop's Dagster instance, so every run can be inspected in the UI
afterwards. With the UI, ``dagster dev`` runs the daemon and the sensors fire by
themselves while this process lands batches and lets the simulated reviewers work.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import yaml

from hitl_pipeline.core.chunks import ParquetBatch, as_frame
from hitl_pipeline.core.schema import load_schema, save_schema
from hitl_pipeline.core.types import ITEM_ID, LABEL, PREDICTED_LABEL
from hitl_pipeline.demo.narrator import Narrator, run_progress
from hitl_pipeline.demo.stream import (
    DriftingStream,
    ModerationStream,
    StreamDrift,
    declare_classes,
    demo_stream,
    policy_run_config,
)
from hitl_pipeline.settings import Settings

_CURSORS_FILE = "cursors.json"
# Dagster's run monitoring, run by the daemon: runs that never start, never finish
# cancelling, or run longer than six hours are marked failed. The default run launcher
# cannot check whether a run's worker died, so runs killed mid-step are left to the
# recovery sensor (hitl_pipeline.doctor), which looks at their processes.
RUN_MONITORING = {
    "enabled": True,
    "start_timeout_seconds": 300,
    "cancel_timeout_seconds": 300,
    "max_runtime_seconds": 6 * 3600,
    "max_resume_run_attempts": 0,  # the default run launcher cannot resume a run
    "poll_interval_seconds": 60,
    # pool slots of a run that ended (or was failed by the doctor) are freed after this
    "free_slots_after_run_end_seconds": 60,
}
# In-process runs would print every Dagster event (and each gate rejection as a stack
# trace); the UI, the summary and the progress lines say what matters.
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass(frozen=True)
class DemoOptions:
    cycles: int = 4
    rows_per_batch: int = 400
    drift_at_batch: int = 2
    reviewer_error_rate: float = 0.05
    stream_seed: int = 7
    stream_drift: StreamDrift = "mixed"  # "concept": the inputs stay, the labelling rule changes
    stream: str = "tabular"  # or "moderation": posts (demo.stream.DEMO_STREAMS)
    new_class_at: int | None = None  # moderation: the cycle whose batch brings class "scam"


def partition_for(cycle: int, stream: DriftingStream | ModerationStream | None = None) -> str:
    """The daily partition of cycle ``cycle``'s batch: the first day of its week."""
    stream = stream or DriftingStream()
    return (stream.start + cycle * stream.period).date().isoformat()


def prepare_home(settings: Settings, options: DemoOptions) -> DriftingStream | ModerationStream:
    """Write the demo's schema and seed data under HITL_HOME (kept if already there)."""
    stream = demo_stream(
        options.stream,
        seed=options.stream_seed,
        rows_per_batch=options.rows_per_batch,
        drift_at_batch=options.drift_at_batch,
        drift=options.stream_drift,
        new_class_at=options.new_class_at,
    )
    for folder in (settings.home, settings.dagster_home, settings.landing, settings.seed):
        folder.mkdir(parents=True, exist_ok=True)
    if not settings.schema_path.is_file():
        settings.schema_path.parent.mkdir(parents=True, exist_ok=True)
        save_schema(stream.schema, settings.schema_path)
    policy = policy_run_config(options.stream)
    if policy and not settings.run_config_file.is_file():
        # the loop's run-config file: runs the daemon's sensors start take it too
        settings.run_config_file.parent.mkdir(parents=True, exist_ok=True)
        settings.run_config_file.write_text(
            "# Settings every run a sensor or the schedule starts takes (the launchpad's\n"
            "# sections); written by the demo for its stream's policy.\n"
            + yaml.safe_dump(policy, sort_keys=False),
            encoding="utf-8",
        )
    if not (settings.seed / "train.parquet").is_file():
        train, holdout = stream.seed_sets()
        train.to_parquet(settings.seed / "train.parquet", index=False)
        holdout.to_parquet(settings.seed / "holdout.parquet", index=False)
    return stream


def land_batch(
    settings: Settings, stream: DriftingStream | ModerationStream, cycle: int
) -> pd.DataFrame:
    """Drop cycle ``cycle``'s batch (without its labels) into the landing folder.

    The labels go to the demo's ground-truth file, which only the simulated reviewers and
    the accuracy figures read. A class the batch brings is added to the schema file first
    (``--new-class-at``), as a team would when a new pattern appears.
    """
    declare_classes(settings.schema_path, stream.classes_at(cycle))
    batch = stream.batch(cycle)
    landing_file = settings.landing / f"{partition_for(cycle, stream)}.parquet"
    if not landing_file.is_file():
        batch.drop(columns=[LABEL]).to_parquet(landing_file, index=False)
    truth_file = settings.demo / "truth.parquet"
    truth_file.parent.mkdir(parents=True, exist_ok=True)
    known = pd.read_parquet(truth_file) if truth_file.is_file() else batch.iloc[0:0]
    truth = pd.concat([known, batch], ignore_index=True).drop_duplicates(ITEM_ID)
    truth.to_parquet(truth_file, index=False)
    return batch


def read_truth(settings: Settings) -> dict[str, str]:
    frame = pd.read_parquet(settings.demo / "truth.parquet")
    return dict(zip(frame[ITEM_ID].astype(str), frame[LABEL].astype(str), strict=True))


@dataclass
class RunRecord:
    """What one Dagster run did, for the summary."""

    job: str
    run_id: str
    trigger: str
    success: bool
    step_seconds: dict[str, float]
    materializations: dict[str, dict[str, Any]]
    checks: dict[str, bool]
    outputs: dict[str, Any] = field(default_factory=dict)


class HeadlessLoop:
    """Evaluates sensors and schedules like the daemon, executing their runs in-process."""

    def __init__(
        self,
        settings: Settings,
        defs: dg.Definitions,
        instance: dg.DagsterInstance,
        *,
        after_run: Callable[[RunRecord], None] | None = None,
        run_config: Mapping[str, Any] | None = None,
    ):
        self.settings = settings
        self.defs = defs
        self.instance = instance
        self.after_run = after_run  # e.g. narrate what the run did
        # over every run's own config and the loop's run-config file (e.g. a test's gate)
        self.run_config = dict(run_config or {})
        self._cursor_file = settings.demo / _CURSORS_FILE
        self.cursors: dict[str, str | None] = (
            json.loads(self._cursor_file.read_text(encoding="utf-8"))
            if self._cursor_file.is_file()
            else {}
        )

    def _save_cursors(self) -> None:
        self._cursor_file.parent.mkdir(parents=True, exist_ok=True)
        self._cursor_file.write_text(json.dumps(self.cursors, indent=1), encoding="utf-8")

    def tick_sensor(self, name: str) -> list[RunRecord]:
        """One evaluation of a sensor; runs whatever it requests."""
        sensor = self.defs.resolve_sensor_def(name)
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursors.get(name),
            definitions=self.defs,
            resources=self.defs.resources,
        )
        result = sensor.evaluate_tick(context)
        self.cursors[name] = result.cursor
        self._save_cursors()
        default_job = sensor.job_name if len(sensor.targets) == 1 else None
        return [self.execute(r, default_job=default_job) for r in result.run_requests or []]

    def tick_schedule(self, name: str) -> list[RunRecord]:
        schedule = self.defs.resolve_schedule_def(name)
        context = dg.build_schedule_context(instance=self.instance, resources=self.defs.resources)
        data = schedule.evaluate_tick(context)
        return [
            self.execute(request, default_job=schedule.job_name)
            for request in data.run_requests or []
        ]

    def execute(self, request: dg.RunRequest, *, default_job: str | None = None) -> RunRecord:
        job_name = request.job_name or default_job
        assert job_name is not None
        job = self.defs.resolve_job_def(job_name)
        run_id = str(uuid.uuid4())
        trigger = request.tags.get("hitl/trigger")
        with run_progress(
            self.instance,
            run_id,
            steps=len(job.graph.nodes),
            desc=f"{job_name}" + (f" ({trigger})" if trigger else ""),
        ):
            # a run config given here replaces the job's own whole: merged back in, then
            # the loop's file (as the sensors' requests carry it), then this caller's
            from hitl_pipeline.defs.automation import JOB_CONFIGS
            from hitl_pipeline.defs.run_config import merged, request_config

            own = request.run_config or request_config(
                job.graph.node_names(), JOB_CONFIGS.get(job_name)
            )
            result = job.execute_in_process(
                instance=self.instance,
                partition_key=request.partition_key,
                run_config=merged(QUIET_CONSOLE, own, _for_job(self.run_config, job)),
                tags=dict(request.tags),
                raise_on_error=False,
                run_id=run_id,
            )
        record = self._record(job_name, request, result)
        if self.after_run is not None:
            self.after_run(record)
        return record

    def run_job(self, job_name: str, *, trigger: str) -> RunRecord:
        return self.execute(dg.RunRequest(job_name=job_name, tags={"hitl/trigger": trigger}))

    def _record(self, job_name: str, request: dg.RunRequest, result: Any) -> RunRecord:
        materializations: dict[str, dict[str, Any]] = {}
        for event in result.get_asset_materialization_events():
            mat = event.materialization
            materializations[mat.asset_key.to_user_string()] = {
                k: getattr(v, "value", v) for k, v in mat.metadata.items()
            }
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        outputs = {}
        for node in (
            "predictions",
            "drift_report",
            "review_queue",
            "labeling_tasks",
            "training_dataset",
            "candidate_model",
            "champion_model",
            "human_labels",
        ):
            if not result.job_def.graph.has_node_named(node):
                continue
            try:
                value = result.output_for_node(node)
            except dg.DagsterInvariantViolationError:  # in the job, but skipped or failed
                continue
            stored = materializations.get(node, {}).get("stored_value")
            if isinstance(value, ParquetBatch) and stored and not Path(value.path).is_file():
                # the IO manager moved the staged file into its store
                value = ParquetBatch.of(stored)
            # a batch passed on as a Parquet file is read whole: demo batches are small
            outputs[node] = as_frame(value)
        return RunRecord(
            job=job_name,
            run_id=result.run_id,
            trigger=str(request.tags.get("hitl/trigger", "")),
            success=result.success,
            step_seconds=step_durations(self.instance, result.run_id),
            materializations=materializations,
            checks=checks,
            outputs=outputs,
        )


def _for_job(run_config: Mapping[str, Any], job: Any) -> dict[str, Any]:
    """The ops of ``run_config`` that are in ``job`` (Dagster refuses config of others)."""
    ops = {k: v for k, v in (run_config.get("ops") or {}).items() if job.graph.has_node_named(k)}
    return {"ops": ops} if ops else {}


def step_durations(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Wall time of each step of a run, from the event log."""
    started: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            started[event.step_key] = entry.timestamp
        elif (
            event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and event.step_key in started
        ):
            seconds[event.step_key] = round(entry.timestamp - started[event.step_key], 3)
    return seconds


def accuracy(predicted: pd.Series, truth: Mapping[str, str], ids: pd.Series) -> float:
    expected = ids.astype(str).map(truth)
    return float((predicted.astype(str).to_numpy() == expected.to_numpy()).mean())


def load_definitions(instance: dg.DagsterInstance) -> dg.Definitions:
    """The project's definitions, loaded against ``instance``.

    Dagster's definitions loader reads the "defs state" storage from a context variable
    that any instance entered earlier in the process may have set (execute_in_process
    and the test helpers enter instances); once that instance is garbage-collected the
    loader fails with "undefined DagsterInstance weakref". Binding the storage of the
    live instance around the load, and resolving the repository there (Dagster caches
    it, so later lookups do not read the variable again), makes it independent of what
    ran before.
    """
    from hitl_pipeline.definitions import defs
    from hitl_pipeline.internals import bind_defs_state_storage

    # No storage at all: the project's definitions keep no defs state, and an instance's
    # own storage can hold a dead weakref too (seen with a PostgreSQL instance entered
    # after others in one process).
    del instance  # kept in the signature: callers load against the loop's instance
    with bind_defs_state_storage(None):
        loaded = defs()
        loaded.get_repository_def()
    return loaded


def use_home(settings: Settings) -> None:
    """Point this process (and the Dagster instance) at the loop's HITL_HOME."""
    os.environ["HITL_HOME"] = str(settings.home)
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    # No telemetry from the embedded stack (the machine may be offline, and it is ours).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    instance_config = settings.dagster_home / "dagster.yaml"
    if settings.postgres is not None:  # HITL_POSTGRES_URL: the instance lives in PostgreSQL
        from hitl_pipeline.deployment import write_instance_config

        write_instance_config(settings.dagster_home, settings.postgres)
    elif not instance_config.is_file():
        from hitl_pipeline.deployment import INSTANCE_DEFAULTS

        instance_config.write_text(
            yaml.safe_dump(INSTANCE_DEFAULTS, sort_keys=False), encoding="utf-8"
        )
    ensure_run_monitoring(instance_config)
    ensure_pool_limit(instance_config)


def ensure_pool_limit(instance_config: Path) -> bool:
    """Give Dagster's concurrency pools a default limit of 1 unless the file sets one.

    The steps that write shared state (``hitl_pipeline.defs.pools``) then never overlap,
    whatever launches them. The setting is inserted as text under an existing
    ``concurrency`` section (or appended with one), so the rest of the file, comments
    included, stays as written; the edit is kept only if the result loads as the same
    configuration plus the limit. Returns True if the file was changed.
    """
    text = instance_config.read_text(encoding="utf-8")
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError:
        return False  # left for Dagster to report
    config = {} if config is None else config
    if not isinstance(config, dict):
        return False
    concurrency = config.get("concurrency")
    if isinstance(concurrency, dict) and "default_limit" in (concurrency.get("pools") or {}):
        return False
    lines = text.splitlines()
    at = next((i for i, line in enumerate(lines) if line.rstrip() == "concurrency:"), None)
    if at is None:
        lines += ["concurrency:", "  pools:", "    default_limit: 1"]
    else:
        following = next((ln for ln in lines[at + 1 :] if ln.strip()), "  ")
        indent = following[: len(following) - len(following.lstrip())] or "  "
        lines[at + 1 : at + 1] = [f"{indent}pools:", f"{indent * 2}default_limit: 1"]
    new_text = "\n".join(lines) + "\n"
    expected = {**config, "concurrency": {**(concurrency or {}), "pools": {"default_limit": 1}}}
    try:
        if yaml.safe_load(new_text) != expected:
            return False
    except yaml.YAMLError:
        return False
    partial = instance_config.with_name(f".{instance_config.name}.partial")
    partial.write_text(new_text, encoding="utf-8")
    os.replace(partial, instance_config)
    return True


def ensure_run_monitoring(instance_config: Path) -> bool:
    """Add ``run_monitoring`` to a ``dagster.yaml`` that has none; True if it was added.

    The section is appended as text, so everything already in the file (comments
    included) stays as written; a ``run_monitoring`` section of the user's own is kept.
    A file that is not valid YAML is left alone for Dagster to report.
    """
    text = instance_config.read_text(encoding="utf-8")
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    if config is not None and (not isinstance(config, dict) or "run_monitoring" in config):
        return False
    block = yaml.safe_dump({"run_monitoring": RUN_MONITORING}, sort_keys=False)
    separator = "\n" if text and not text.endswith("\n") else ""
    partial = instance_config.with_name(f".{instance_config.name}.partial")
    partial.write_text(text + separator + block, encoding="utf-8")
    os.replace(partial, instance_config)
    return True


def wait_for(condition: Callable[[], bool], *, timeout_s: float, every_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every_s)
    return condition()


def _by_job(records: list[RunRecord], job: str) -> list[RunRecord]:
    return [r for r in records if r.job == job]


def cycle_summary(
    cycle: int,
    records: list[RunRecord],
    *,
    batch: pd.DataFrame,
    truth: Mapping[str, str],
    scorer: Callable[[str | None, pd.DataFrame], pd.Series],
    baseline_version: str,
    champion_after: str | None,
    reviewed: int,
) -> dict[str, Any]:
    """The figures of one weekly cycle, from the runs it started."""
    score_runs = _by_job(records, "score_batch_job")
    score = score_runs[-1] if score_runs else None
    mats = score.materializations if score else {}
    out = score.outputs if score else {}
    scores = out.get("predictions")
    drift = out.get("drift_report")
    pushes = [r.outputs["labeling_tasks"] for r in records if "labeling_tasks" in r.outputs]
    retrains = _by_job(records, "retrain_job")
    pulls = [r.materializations.get("human_labels", {}) for r in records]
    trained = next((r for r in reversed(retrains) if "candidate_model" in r.outputs), None)
    stage_seconds: dict[str, float] = {}
    for record in records:
        for step, seconds in record.step_seconds.items():
            stage_seconds[step] = round(stage_seconds.get(step, 0.0) + seconds, 3)
    features = batch.drop(columns=["label"])
    return {
        "cycle": cycle,
        "partition": partition_for(cycle),
        "score_run_ok": bool(score and score.success),
        "rows_scored": len(scores) if scores is not None else 0,
        "rows_quarantined": int(mats.get("production_batch", {}).get("quarantined_rows", 0)),
        "drift_share": drift.drift_share if drift is not None else None,
        "drift_detected": drift.dataset_drift if drift is not None else None,
        "drifted_columns": list(drift.drifted_columns) if drift is not None else [],
        "routed_by_reason": _routed_by_reason(records),
        "tasks_pushed": int(sum(p.created for p in pushes)),
        "tasks_already_present": int(sum(p.already_present for p in pushes)),
        "annotations_submitted": reviewed,
        "annotations_pulled": int(sum(int(p.get("annotations_pulled_now", 0)) for p in pulls)),
        "dataset_version": trained.outputs["training_dataset"].version_id if trained else None,
        "candidate_model_version": trained.outputs["candidate_model"].version if trained else None,
        "gate": _gate(retrains),
        "champion_version": champion_after,
        "accuracy": {
            "champion_at_scoring": (
                accuracy(scores[PREDICTED_LABEL], truth, scores[ITEM_ID])
                if scores is not None
                else None
            ),
            "never_retrained": accuracy(scorer(baseline_version, features), truth, batch[ITEM_ID]),
            "champion_after_cycle": accuracy(
                scorer(champion_after, features), truth, batch[ITEM_ID]
            ),
        },
        "stage_seconds": stage_seconds,
        "runs": [
            {"job": r.job, "run_id": r.run_id, "trigger": r.trigger, "success": r.success}
            for r in records
        ],
    }


def _routed_by_reason(records: list[RunRecord]) -> dict[str, int]:
    """Rows per reason code of the batch's last routing (the drift response re-routes
    the same batch with more capacity), from the asset's metadata: its value may hold
    the review queue alone."""
    counts = [
        r.materializations["review_queue"]["reasons"]
        for r in records
        if "reasons" in r.materializations.get("review_queue", {})
    ]
    return {str(k): int(v) for k, v in counts[-1].items()} if counts else {}


def _gate(retrains: list[RunRecord]) -> str | None:
    verdicts = [r.checks["passes_gate"] for r in retrains if "passes_gate" in r.checks]
    if not verdicts:
        return None
    return "promoted" if verdicts[-1] else "rejected"


def run_headless(
    settings: Settings,
    options: DemoOptions,
    *,
    answer_tasks: Callable[[Mapping[str, str]], int],
    log: Callable[[str], None] = print,
    run_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``options.cycles`` weekly cycles and return the JSON-ready summary.

    Args:
        settings: where the loop's state lives and which services it talks to.
        options: stream and cycle count.
        answer_tasks: lets the (simulated) reviewers answer every open task, given the
            ground truth; returns how many annotations were submitted.
        log: progress lines.
        run_config: run config over every run's own and over the loop's run-config file
            (which holds the stream's policy: ``demo.stream.policy_run_config``).
    """
    use_home(settings)
    stream = prepare_home(settings, options)
    instance = dg.DagsterInstance.get()
    defs = load_definitions(instance)
    resources = defs.resources or {}
    narrator = Narrator(instance, queue_status=resources["label_studio"].queue_status)
    loop = HeadlessLoop(
        settings,
        defs,
        instance,
        after_run=lambda _: tell(narrator, log),
        run_config=run_config or {},
    )
    registry = resources["registry"]
    # No daemon runs the recovery sensor here: clean up after an earlier, killed demo.
    from hitl_pipeline.doctor import doctor

    report = doctor(instance, registry=registry, dataset_store=resources["dataset_store"])
    for line in report.lines():
        log(f"recovery: {line}")
    from hitl_pipeline.core.inference import score_batch

    def scorer(version: str | None, features: pd.DataFrame) -> pd.Series:
        ref = registry.get_version(version=str(version))
        schema = load_schema(settings.schema_path)  # with any class added since
        model = registry.load_model(ref=ref)
        scored = score_batch(model, features, schema, model_version=ref.version)
        return scored[PREDICTED_LABEL]

    started = time.monotonic()
    bootstrap: dict[str, Any] | None = None
    if registry.champion() is None:
        log("bootstrap: training the first champion from the seed data")
        record = loop.run_job("retrain_job", trigger="bootstrap")
        if not record.success:
            raise RuntimeError(f"bootstrap retrain run {record.run_id} failed; see the Dagster UI")
        bootstrap = {"run_id": record.run_id, "step_seconds": record.step_seconds}
    baseline = min((r for r in registry.list_versions()), key=lambda r: int(r.version)).version

    cycles = []
    for cycle in range(1, options.cycles + 1):
        t0 = time.monotonic()
        batch = land_batch(settings, stream, cycle)
        log(f"cycle {cycle}: batch {partition_for(cycle, stream)} dropped in {settings.landing}")
        records = loop.tick_sensor("landing_sensor")
        records += loop.tick_sensor("drift_alert_sensor")
        truth = read_truth(settings)

        reviewed = _review(answer_tasks, truth, log)
        records += loop.tick_sensor("annotation_sensor")
        # a failed audit check (concept drift) starts the drift response for the batch
        concept = loop.tick_sensor("concept_drift_sensor")
        if concept:
            records += concept
            reviewed += _review(answer_tasks, truth, log)
            records += loop.tick_sensor("annotation_sensor")
        records += loop.tick_schedule("weekly_retrain_schedule")
        champion = registry.champion()
        summary = cycle_summary(
            cycle,
            records,
            batch=batch,
            truth=truth,
            scorer=scorer,
            baseline_version=baseline,
            champion_after=champion.version if champion else None,
            reviewed=reviewed,
        )
        summary["wall_seconds"] = round(time.monotonic() - t0, 1)
        cycles.append(summary)
        acc = summary["accuracy"]
        log(
            f"cycle {cycle} [{summary['partition']}]: drift={summary['drift_detected']} "
            f"pushed={summary['tasks_pushed']} labelled={reviewed} gate={summary['gate']} "
            f"champion=v{summary['champion_version']} "
            f"acc(at scoring)={_pct(acc['champion_at_scoring'])} "
            f"acc(never retrained)={_pct(acc['never_retrained'])} ({summary['wall_seconds']} s)"
        )
    return {
        "cycles": cycles,
        "bootstrap": bootstrap,
        "baseline_model_version": baseline,
        "registry_versions": [r.version for r in registry.list_versions()],
        "wall_seconds": round(time.monotonic() - started, 1),
        "state": {
            "hitl_home": str(settings.home),
            "dagster_home": str(settings.dagster_home),
            "mlflow_tracking_uri": settings.mlflow_tracking_uri,
            "label_studio_url": settings.label_studio_url,
            "dvc_repository": str(settings.dataset_repo),
            "dvc_remote": settings.dvc_remote,
            "landing": str(settings.landing),
        },
    }


def _review(
    answer_tasks: Callable[[Mapping[str, str]], int],
    truth: Mapping[str, str],
    log: Callable[[str], None],
) -> int:
    answered = answer_tasks(truth)
    log(f"{time.strftime('%H:%M:%S')} simulated reviewers submitted {answered} answers")
    return answered


def tell(narrator: Narrator, log: Callable[[str], None] = print) -> None:
    """Log the narrator's new lines, each with the time of day."""
    for line in narrator.poll():
        log(f"{time.strftime('%H:%M:%S')} {line}")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"
