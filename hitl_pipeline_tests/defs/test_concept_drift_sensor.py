"""The concept-drift alert: a failed audit check starts the drift alert's response.

One test per cursor scenario, asserting the run requests and the new cursor. The audit
check is the real ``audit_pass_rate_holds``, evaluated by real materializations in a
test Dagster instance on a label ledger written to a temporary folder; a stand-in asset
takes the place of ``human_labels`` (whose real body pulls from Label Studio). No
outside service is touched.
"""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from hitl_pipeline.core.schema import save_schema
from hitl_pipeline.core.types import Annotation, QueueStatus
from hitl_pipeline.defs.automation import (
    AUDIT_CHECK_KEY,
    annotation_sensor,
    collect_labels_job,
    concept_drift_sensor,
    drift_alert_sensor,
    drift_review_job,
    retrain_job,
)
from hitl_pipeline.defs.s06_feedback import audit_pass_rate_holds
from hitl_pipeline.demo.stream import DEMO_SCHEMA
from hitl_pipeline.internals import asset_check_status
from hitl_pipeline.resources.local_store import LocalStore, annotations_to_frame
from hitl_pipeline.resources.production import ProductionSource

Status = asset_check_status()

T0 = datetime(2026, 6, 2, 9, 0, tzinfo=UTC)
GOOD, FELL = "2026-06-01", "2026-06-08"


@dg.asset(name="human_labels")
def stand_in_human_labels() -> None:
    """Stands in for the pull from Label Studio: the check reads the ledger on disk."""


def _ledger(per_partition: dict[str, tuple[int, int]]) -> list[Annotation]:
    """partition -> (confirmed, audited) audit answers of the model's ``retain``."""
    out = []
    for partition, (confirmed, audited) in per_partition.items():
        for i in range(audited):
            n = len(out)
            out.append(
                Annotation(
                    item_id=f"{partition}-{i}",
                    task_id=n,
                    annotation_id=n,
                    label="retain" if i < confirmed else "churn",
                    annotator="ann",
                    completed_at=T0 + timedelta(seconds=n),
                    updated_at=T0 + timedelta(seconds=n),
                    was_cancelled=False,
                    predicted_label="retain",
                    model_version="1",
                    partition=partition,
                    features={},
                    reasons=("audit",),
                    tier="general",
                )
            )
    return out


def _audit_run(
    instance: dg.DagsterInstance, home: Path, per_partition: dict[str, tuple[int, int]]
) -> tuple[int, bool]:
    """Evaluate the real audit check on this ledger; returns (record id, passed)."""
    store = LocalStore(home=str(home))
    store.write_ledger(annotations_to_frame(_ledger(per_partition)))
    schema_path = home / "schema.json"
    if not schema_path.is_file():
        save_schema(DEMO_SCHEMA, schema_path)
    production = ProductionSource(
        landing_dir=str(home / "landing"),
        quarantine_dir=str(home / "quarantine"),
        schema_path=str(schema_path),
    )
    result = dg.materialize(
        [stand_in_human_labels, audit_pass_rate_holds],
        instance=instance,
        resources={"local_store": store, "production": production},
        raise_on_error=False,
    )
    (evaluation,) = result.get_asset_check_evaluations()
    history = instance.event_log_storage.get_asset_check_execution_history(
        AUDIT_CHECK_KEY, limit=100, status={Status.FAILED, Status.SUCCEEDED}
    )
    (record,) = [r for r in history if r.run_id == result.run_id]
    return record.id, evaluation.passed


HOLDS = {GOOD: (39, 40)}
FALLS = {GOOD: (40, 40), FELL: (6, 20)}  # 0.30 after 1.00: the floor and a fall


def _requests(result) -> list[tuple[str, str, str]]:
    return [(r.partition_key, r.run_key, r.tags["hitl/trigger"]) for r in result.run_requests]


def test_the_sensor_starts_the_drift_alerts_own_response(definitions):
    sensor = definitions.resolve_sensor_def(concept_drift_sensor.name)
    assert sensor.job_name == drift_review_job.name
    assert sensor.job_name == definitions.resolve_sensor_def(drift_alert_sensor.name).job_name
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert "audit" in sensor.description


def test_concept_no_audit_evaluated_yet(tick):
    with dg.instance_for_test() as instance:
        result = tick(concept_drift_sensor, instance=instance)
    assert result.run_requests == []
    assert result.skip_message == "no new audit alerts since check record 0; no audit evaluated yet"
    assert result.cursor is None


def test_concept_passing_audit_is_no_alert(tick, tmp_path):
    with dg.instance_for_test() as instance:
        record, passed = _audit_run(instance, tmp_path, HOLDS)
        result = tick(concept_drift_sensor, instance=instance)
    assert passed is True
    assert result.run_requests == []
    assert result.skip_message == (
        f"no new audit alerts since check record 0; latest audit passed on partition {GOOD} "
        f"(record {record})"
    )
    assert result.cursor is None


def test_concept_first_alert_requests_the_boosted_review_of_the_batch_that_fell(tick, tmp_path):
    with dg.instance_for_test() as instance:
        _audit_run(instance, tmp_path, HOLDS)
        alert, passed = _audit_run(instance, tmp_path, FALLS)
        result = tick(concept_drift_sensor, instance=instance)
    assert passed is False
    assert _requests(result) == [(FELL, f"concept-drift:{alert}", "concept_drift_alert")]
    assert json.loads(result.cursor) == {"id": alert, "partition": FELL}


def test_concept_same_alert_is_not_acted_on_twice(tick, tmp_path):
    with dg.instance_for_test() as instance:
        alert, _ = _audit_run(instance, tmp_path, FALLS)
        first = tick(concept_drift_sensor, instance=instance)
        again = tick(concept_drift_sensor, cursor=first.cursor, instance=instance)
    assert len(first.run_requests) == 1
    assert again.run_requests == []
    assert again.skip_message == (
        f"no new audit alerts since check record {alert}; latest audit failed on partition "
        f"{FELL} (record {alert})"
    )
    assert again.cursor == first.cursor


def test_concept_audit_passing_again_starts_nothing(tick, tmp_path):
    with dg.instance_for_test() as instance:
        _audit_run(instance, tmp_path, FALLS)
        first = tick(concept_drift_sensor, instance=instance)
        _audit_run(instance, tmp_path, {**FALLS, "2026-06-15": (20, 20)})  # recovered
        later = tick(concept_drift_sensor, cursor=first.cursor, instance=instance)
    assert later.run_requests == []
    assert later.cursor == first.cursor


def test_concept_re_evaluated_alert_on_the_same_batch_is_one_review(tick, tmp_path):
    """Every label collection evaluates the audit again: the same fallen batch is
    reviewed once, while the cursor moves past each evaluation."""
    with dg.instance_for_test() as instance:
        first_alert, _ = _audit_run(instance, tmp_path, FALLS)
        first = tick(concept_drift_sensor, instance=instance)
        again_alert, passed = _audit_run(instance, tmp_path, FALLS)
        again = tick(concept_drift_sensor, cursor=first.cursor, instance=instance)
    assert passed is False and again_alert > first_alert
    assert again.run_requests == []
    assert "already got its boosted review" in again.skip_message
    assert json.loads(again.cursor) == {"id": again_alert, "partition": FELL}


def test_concept_a_later_batch_falling_is_a_new_alert(tick, tmp_path):
    with dg.instance_for_test() as instance:
        _audit_run(instance, tmp_path, FALLS)
        first = tick(concept_drift_sensor, instance=instance)
        later_alert, _ = _audit_run(instance, tmp_path, {**FALLS, "2026-06-15": (5, 20)})
        later = tick(concept_drift_sensor, cursor=first.cursor, instance=instance)
    assert _requests(later) == [
        ("2026-06-15", f"concept-drift:{later_alert}", "concept_drift_alert")
    ]
    assert json.loads(later.cursor) == {"id": later_alert, "partition": "2026-06-15"}


# --- the early retrain after the concept alert's review --------------------------------
class FakeLabelStudio:
    """Stands in for LabelStudioResource.queue_status only; touches no server."""

    def __init__(self, status: QueueStatus):
        self.status = status

    def queue_status(self) -> QueueStatus:
        return self.status


@dg.asset(name="labeling_tasks")
def stand_in_labeling_tasks() -> None:
    """Stands in for the push: only its time and its run's trigger tag matter."""


@dg.asset(name="candidate_model")
def stand_in_candidate_model() -> None:
    """Stands in for a training run: only its materialization time matters."""


def test_annotation_sensor_retrains_early_after_the_concept_review(tick, tmp_path):
    done = FakeLabelStudio(QueueStatus(total_tasks=8, finished_tasks=8, latest_completed_at=T0))
    collect = [(collect_labels_job.name, f"collect:{T0.isoformat()}")]

    def requests(result):
        return [(r.job_name, r.run_key) for r in result.run_requests]

    def push(trigger: str) -> None:
        assert dg.materialize(
            [stand_in_labeling_tasks], instance=instance, tags={"hitl/trigger": trigger}
        ).success

    with dg.instance_for_test() as instance:
        alert, _ = _audit_run(instance, tmp_path, FALLS)
        # the review the alert asks for has not been pushed: collecting only
        assert requests(tick(annotation_sensor, instance=instance, label_studio=done)) == collect
        push("concept_drift_alert")
        # the next label collection evaluates the audit again: still the same alert
        _audit_run(instance, tmp_path, FALLS)
        early = tick(annotation_sensor, instance=instance, label_studio=done)
        assert requests(early) == [(retrain_job.name, f"early-retrain:{alert}")]
        # once retrained, the same fallen batch asks for nothing more
        assert dg.materialize([stand_in_candidate_model], instance=instance).success
        _audit_run(instance, tmp_path, FALLS)
        after = tick(annotation_sensor, instance=instance, label_studio=done)
        assert requests(after) == collect
