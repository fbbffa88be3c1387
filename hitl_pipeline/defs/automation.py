"""Jobs, sensors and the weekly schedule that keep the flywheel turning by itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import dagster as dg

from hitl_pipeline.core.triggers import (
    RETRAIN_CRON,
    RETRAIN_TIMEZONE,
    AnnotationAction,
    LandedBatch,
    annotation_action,
    batches_to_score,
    retrain_due,
)
from hitl_pipeline.defs.partitions import BATCH_PARTITIONS
from hitl_pipeline.defs.run_config import request_config
from hitl_pipeline.defs.s03_monitoring import NO_DRIFT_CHECK
from hitl_pipeline.defs.s06_feedback import AUDIT_CHECK, AUDIT_PARTITION
from hitl_pipeline.doctor import doctor
from hitl_pipeline.internals import asset_check_status
from hitl_pipeline.resources.dvc_store import DvcDatasetStore
from hitl_pipeline.resources.label_studio import LabelStudioResource, LabelStudioUnavailable
from hitl_pipeline.resources.mlflow_registry import MlflowRegistryResource
from hitl_pipeline.resources.production import ProductionSource

TRIGGER_TAG = "hitl/trigger"
DRIFT_CHECK_KEY = dg.AssetCheckKey(dg.AssetKey("drift_report"), NO_DRIFT_CHECK)
AUDIT_CHECK_KEY = dg.AssetCheckKey(dg.AssetKey("human_labels"), AUDIT_CHECK)
# runs that push a boosted review: after a data-drift alert or an audit (concept) alert
DRIFT_TRIGGER, CONCEPT_TRIGGER = "drift_alert", "concept_drift_alert"
if TYPE_CHECKING:
    from hitl_pipeline.internals import CheckRecord

AssetCheckExecutionRecordStatus = asset_check_status()
_COMPLETED = {AssetCheckExecutionRecordStatus.FAILED, AssetCheckExecutionRecordStatus.SUCCEEDED}
CANDIDATE_KEY = dg.AssetKey("candidate_model")
LABELING_KEY = dg.AssetKey("labeling_tasks")

SCORE_STEPS = ("production_batch", "predictions", "drift_report", "review_queue", "labeling_tasks")
DRIFT_REVIEW_STEPS = ("review_queue", "labeling_tasks")
# the drift response's own setting; a run config given with a request replaces a job's
# config whole, so requests merge it back in (run_config.request_config)
DRIFT_REVIEW_CONFIG = {"ops": {"review_queue": {"config": {"drift_response": True}}}}
# jobs with settings of their own (for callers that request runs with a run config)
JOB_CONFIGS = {"drift_review_job": DRIFT_REVIEW_CONFIG}
COLLECT_STEPS = ("human_labels", "adjudication_tasks", "loop_metrics")
RETRAIN_STEPS = (
    "human_labels",
    "adjudication_tasks",
    "training_dataset",
    "candidate_model",
    "champion_model",
    "routing_threshold",
    "loop_metrics",
)

score_batch_job = dg.define_asset_job(
    "score_batch_job",
    selection=list(SCORE_STEPS),
    description="A new production batch: validate, score with the champion, check drift, "
    "route, and push the items to review into Label Studio.",
)
drift_review_job = dg.define_asset_job(
    "drift_review_job",
    selection=list(DRIFT_REVIEW_STEPS),
    config=DRIFT_REVIEW_CONFIG,
    description="The drift alert's response: re-route a drifted batch with the larger "
    "review capacity; only the newly selected items are pushed.",
)
collect_labels_job = dg.define_asset_job(
    "collect_labels_job",
    selection=list(COLLECT_STEPS),
    description="Pull finished annotations from Label Studio into the label ledger, send "
    "disagreements to adjudication, and update loop health.",
)
retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=list(RETRAIN_STEPS),
    description="Pull labels, version the dataset with DVC, retrain, gate, promote, and "
    "update loop health.",
)


@dg.sensor(
    job=score_batch_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A batch file landed (or a corrected file replaced one): score it with "
    "the champion, check drift, route and push the items to review. The cursor keeps each "
    "batch's file fingerprint.",
)
def landing_sensor(context: dg.SensorEvaluationContext, production: ProductionSource):
    """Scores each batch file that lands (and again when a corrected file replaces it)."""
    valid = set(BATCH_PARTITIONS.get_partition_keys())
    landed = [LandedBatch(b.partition_key, b.fingerprint) for b in production.list_batches()]
    outside = [b.partition_key for b in landed if b.partition_key not in valid]
    if outside:
        context.log.warning(f"ignoring batches outside the partition range: {outside}")
    todo, cursor = batches_to_score(
        [b for b in landed if b.partition_key in valid], json.loads(context.cursor or "{}")
    )
    context.update_cursor(json.dumps(cursor, sort_keys=True))
    if not todo:
        newest = max(cursor, default=None)
        return dg.SkipReason(
            f"no new or changed batch files: {len(cursor)} batch(es) already scored"
            + (f", newest {newest}" if newest else "")
            + f" ({len(landed)} file(s) in the landing folder)"
        )
    return [
        dg.RunRequest(
            run_key=f"batch:{b.partition_key}:{b.fingerprint}",
            partition_key=b.partition_key,
            run_config=request_config(SCORE_STEPS),
            tags={TRIGGER_TAG: "new_batch"},
        )
        for b in todo
    ]


@dg.sensor(
    job=drift_review_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=f"Data drift: the {NO_DRIFT_CHECK} check of a batch failed. Starts a "
    "boosted review of that batch; the annotation sensor retrains early once it is done. "
    "The cursor keeps the last check record acted on.",
)
def drift_alert_sensor(context: dg.SensorEvaluationContext):
    """A failed drift check starts a boosted review of the drifted batch.

    The early retrain follows from the annotation sensor once that review is finished.
    """
    last_id = int(context.cursor or 0)
    failed = [
        record
        for record in context.instance.event_log_storage.get_asset_check_execution_history(
            DRIFT_CHECK_KEY, limit=100, status={AssetCheckExecutionRecordStatus.FAILED}
        )
        if record.id > last_id
    ]
    if not failed:
        return dg.SkipReason(
            f"no new drift alerts since check record {last_id}; "
            + _latest_verdict(context.instance, DRIFT_CHECK_KEY, "drift check")
        )
    context.update_cursor(str(max(r.id for r in failed)))
    requests = []
    for record in sorted(failed, key=lambda r: r.id):
        run = context.instance.get_run_by_id(record.run_id)
        partition = record.partition or (run.tags.get("dagster/partition") if run else None)
        if partition:
            requests.append(
                dg.RunRequest(
                    run_key=f"drift:{record.id}",
                    partition_key=partition,
                    run_config=request_config(DRIFT_REVIEW_STEPS, DRIFT_REVIEW_CONFIG),
                    tags={TRIGGER_TAG: DRIFT_TRIGGER},
                )
            )
    return requests or dg.SkipReason(
        f"drift alert(s) {', '.join(str(r.id) for r in failed)} name no partition: nothing "
        "to review again"
    )


def _latest_verdict(instance: dg.DagsterInstance, key: dg.AssetCheckKey, what: str) -> str:
    """``drift check passed on partition 2026-01-12 (record 41)``: why nothing is new."""
    latest = instance.event_log_storage.get_asset_check_execution_history(
        key, limit=1, status=_COMPLETED
    )
    if not latest:
        return f"no {what} evaluated yet"
    record = latest[0]
    verdict = "failed" if record.status == AssetCheckExecutionRecordStatus.FAILED else "passed"
    run = None if record.partition else instance.get_run_by_id(record.run_id)
    partition = (
        record.partition
        or (run.tags.get("dagster/partition") if run else None)
        or _audit_partition(record)
    )
    where = f" on partition {partition}" if partition else ""
    return f"latest {what} {verdict}{where} (record {record.id})"


def _audit_partition(record: CheckRecord) -> str | None:
    """The batch whose audit the check judged (its newest audited partition)."""
    evaluation = record.evaluation
    value = evaluation.metadata.get(AUDIT_PARTITION) if evaluation is not None else None
    text = getattr(value, "value", value)
    return str(text) if text else None


@dg.sensor(
    job=drift_review_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Concept drift: the audit of auto-accepted items failed "
    f"({AUDIT_CHECK}). Starts the drift alert's response: a boosted review of the audited "
    "batch, after which the annotation sensor retrains early.",
)
def concept_drift_sensor(context: dg.SensorEvaluationContext):
    """A failed audit check starts a boosted review of the batch whose audit fell.

    The audit check is evaluated again on every label collection, so one audit alert
    shows up as a run of failed evaluations of the same batch: each evaluation is seen
    once (the cursor keeps the last record id) and each batch gets one review (the
    cursor keeps the batch answered last). As with a data-drift alert, the early retrain
    follows from the annotation sensor once that review is finished.
    """
    cursor = json.loads(context.cursor) if context.cursor else {}
    last_id: int = cursor.get("id", 0)
    answered: str | None = cursor.get("partition")
    failed = sorted(
        (
            record
            for record in context.instance.event_log_storage.get_asset_check_execution_history(
                AUDIT_CHECK_KEY, limit=100, status={AssetCheckExecutionRecordStatus.FAILED}
            )
            if record.id > last_id
        ),
        key=lambda r: r.id,
    )
    if not failed:
        return dg.SkipReason(
            f"no new audit alerts since check record {last_id}; "
            + _latest_verdict(context.instance, AUDIT_CHECK_KEY, "audit")
        )
    requests, skipped = [], []
    for record in failed:
        partition = _audit_partition(record)
        if partition is None or partition == answered:
            skipped.append(partition or "no batch")
            continue
        answered = partition
        requests.append(
            dg.RunRequest(
                run_key=f"concept-drift:{record.id}",
                partition_key=partition,
                run_config=request_config(DRIFT_REVIEW_STEPS, DRIFT_REVIEW_CONFIG),
                tags={TRIGGER_TAG: CONCEPT_TRIGGER},
            )
        )
    context.update_cursor(json.dumps({"id": failed[-1].id, "partition": answered}))
    if requests:
        return requests
    return dg.SkipReason(
        f"audit alert(s) for {', '.join(sorted(set(skipped)))}: that batch already got its "
        "boosted review, or the check named no batch"
    )


def _audit_alert(instance: dg.DagsterInstance) -> CheckRecord | None:
    """The latest audit alert: the first failed evaluation of the newest failing batch.

    Every label collection evaluates the audit again; the alert dates from when the
    batch's audit first failed, not from the latest re-evaluation.
    """
    history = instance.event_log_storage.get_asset_check_execution_history(
        AUDIT_CHECK_KEY, limit=100, status=_COMPLETED
    )  # newest first
    alert = None
    for record in history:
        failed = record.status == AssetCheckExecutionRecordStatus.FAILED
        if alert is None:
            alert = record if failed else None
            if alert is None:
                continue
        elif failed and _audit_partition(record) == _audit_partition(alert):
            alert = record
        else:
            break
    return alert


def outstanding_drift_alert(instance: dg.DagsterInstance) -> int | None:
    """The drift alert (its check record id), data drift or audit (concept) drift, that
    came after the last retrain and whose boosted review was pushed, or ``None``.

    Until the sensor's boosted review has reached Label Studio, an empty queue only
    means people finished the regular review: retraining then would ignore the labels
    the alert asked for.
    """
    drift = instance.event_log_storage.get_asset_check_execution_history(
        DRIFT_CHECK_KEY, limit=1, status={AssetCheckExecutionRecordStatus.FAILED}
    )
    alerts = [*drift, *filter(None, [_audit_alert(instance)])]
    if not alerts:
        return None
    alert = max(alerts, key=lambda r: r.create_timestamp)
    trained = instance.get_latest_materialization_event(CANDIDATE_KEY)
    if trained is not None and trained.timestamp >= alert.create_timestamp:
        return None
    return alert.id if drift_review_pushed_since(instance, alert.create_timestamp) else None


def drift_review_pushed_since(instance: dg.DagsterInstance, since: float) -> bool:
    """Whether a boosted review run (after a drift or audit alert) pushed its tasks after
    ``since`` (the regular scoring run pushes too, right after its own drift check: that
    one does not count)."""
    records = instance.fetch_materializations(LABELING_KEY, limit=50).records
    for record in records:  # newest first
        entry = record.event_log_entry
        if entry.timestamp <= since:
            return False
        run = instance.get_run_by_id(entry.run_id)
        if run is not None and run.tags.get(TRIGGER_TAG) in (DRIFT_TRIGGER, CONCEPT_TRIGGER):
            return True
    return False


def waiting_runs(instance: dg.DagsterInstance, job_name: str) -> bool:
    """Whether a run of the job is queued or starting (not yet pulling anything)."""
    waiting = [
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
    ]
    return bool(instance.get_run_ids(dg.RunsFilter(job_name=job_name, statuses=waiting), limit=1))


def last_training_at(instance: dg.DagsterInstance) -> datetime | None:
    event = instance.get_latest_materialization_event(CANDIDATE_KEY)
    return datetime.fromtimestamp(event.timestamp, tz=UTC) if event else None


@dg.sensor(
    jobs=[collect_labels_job, retrain_job],
    minimum_interval_seconds=20,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="People answered in Label Studio: pull the answers into the ledger "
    "(collect_labels_job), or, when a drift alert's boosted review is finished, retrain "
    "early (retrain_job). The cursor keeps the newest answer time acted on.",
)
def annotation_sensor(context: dg.SensorEvaluationContext, label_studio: LabelStudioResource):
    """Finished annotations in Label Studio: collect them, or retrain early after drift."""
    try:
        status = label_studio.queue_status()
    except LabelStudioUnavailable as exc:  # keep ticking while Label Studio is down
        return dg.SkipReason(f"Label Studio not reachable: {exc}")
    last_seen = datetime.fromisoformat(context.cursor) if context.cursor else None
    alert = outstanding_drift_alert(context.instance)
    action = annotation_action(
        latest_completed_at=status.latest_completed_at,
        last_seen=last_seen,
        pending_tasks=status.pending_tasks,
        drift_outstanding=alert is not None,
    )
    if action is AnnotationAction.NOTHING:
        newest = status.latest_completed_at
        since = f"since {last_seen.isoformat()}" if last_seen else "yet"
        return dg.SkipReason(
            f"no new annotations ({status.pending_tasks} tasks pending): none answered {since}"
            + (f", newest answer {newest.isoformat()}" if newest and last_seen else "")
        )
    if action is AnnotationAction.COLLECT and waiting_runs(
        context.instance, collect_labels_job.name
    ):
        # the waiting run will pull these annotations too; keep the cursor so a later
        # tick asks again if it does not
        return dg.SkipReason(
            "new annotations, but a label collection run is already waiting to start; "
            f"cursor kept at {context.cursor or 'the start'}"
        )
    assert status.latest_completed_at is not None
    stamp = status.latest_completed_at.isoformat()
    context.update_cursor(stamp)
    if action is AnnotationAction.EARLY_RETRAIN:
        return dg.RunRequest(
            # one early retrain per alert, however many annotations arrive before it runs
            run_key=f"early-retrain:{alert}",
            job_name=retrain_job.name,
            run_config=request_config(RETRAIN_STEPS),
            tags={TRIGGER_TAG: "drift_early_retrain"},
        )
    return dg.RunRequest(
        run_key=f"collect:{stamp}",
        job_name=collect_labels_job.name,
        run_config=request_config(COLLECT_STEPS),
        tags={TRIGGER_TAG: "annotations"},
    )


@dg.schedule(
    job=retrain_job,
    cron_schedule=RETRAIN_CRON,
    execution_timezone=RETRAIN_TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Mondays 06:00 UTC: retrain, gate and promote when people labelled "
    "something since the last training (or no champion exists yet); otherwise skip and "
    "say why.",
)
def weekly_retrain_schedule(
    context: dg.ScheduleEvaluationContext,
    label_studio: LabelStudioResource,
    registry: MlflowRegistryResource,
):
    """Every Monday 06:00 UTC: retrain when people labelled something since last time."""
    try:
        latest = label_studio.queue_status().latest_completed_at
    except LabelStudioUnavailable as exc:
        return dg.SkipReason(f"Label Studio not reachable: {exc}")
    trained = last_training_at(context.instance)
    why = retrain_due(
        has_champion=registry.champion() is not None,
        latest_annotation_at=latest,
        last_training_at=trained,
    )
    if why is None:
        newest = f"newest answer {latest.isoformat()}" if latest else "no answer in Label Studio"
        at = trained.isoformat() if trained else "never"
        return dg.SkipReason(f"no new human labels since the last training ({at}; {newest})")
    return dg.RunRequest(
        run_config=request_config(RETRAIN_STEPS),
        tags={TRIGGER_TAG: "weekly_schedule", "hitl/why": why},
    )


@dg.sensor(
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 5 minutes, `hitl-pipeline doctor`: fails dead runs and their MLflow "
    "runs, tags undecided model versions abandoned, restores dataset files. Never starts a "
    "run; the skip reason lists what it fixed.",
)
def recovery_sensor(
    context: dg.SensorEvaluationContext,
    registry: MlflowRegistryResource,
    dataset_store: DvcDatasetStore,
):
    """Every 5 minutes, ``hitl-pipeline doctor``: what killed runs left behind is put right.

    Dead STARTED runs are marked failed, their MLflow runs FAILED, their undecided model
    versions tagged ``gate.abandoned``, and stray dataset files checked out again. Each
    fix is logged; the tick's skip reason sums them up. It never requests a run.
    """
    report = doctor(context.instance, registry=registry, dataset_store=dataset_store)
    for fix in report.fixes:
        context.log.warning(fix.line())
    for error in report.errors:
        context.log.error(f"recovery check failed: {error}")
    return dg.SkipReason(
        f"recovery: {report.summary()}" + "".join(f"\n{fix.line()}" for fix in report.fixes[:20])
    )
