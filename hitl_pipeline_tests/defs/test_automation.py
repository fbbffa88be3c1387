"""Sensors, one test per cursor scenario, asserting the run requests and the new cursor.

The landing sensor reads a real landing folder in a temporary directory; the annotation
sensor gets a duck-typed Label Studio stand-in (no server is touched here; the
end-to-end test drives the real one); the drift sensor reads real asset-check records
that a small stand-in asset writes into an ephemeral Dagster instance.
"""

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from hitl_pipeline.core.types import QueueStatus
from hitl_pipeline.defs.automation import (
    annotation_sensor,
    collect_labels_job,
    drift_alert_sensor,
    landing_sensor,
    retrain_job,
)
from hitl_pipeline.defs.partitions import BATCH_PARTITIONS
from hitl_pipeline.defs.s03_monitoring import NO_DRIFT_CHECK
from hitl_pipeline.resources.label_studio import LabelStudioUnavailable
from hitl_pipeline.resources.production import ProductionSource


def _source(tmp_path: Path) -> ProductionSource:
    return ProductionSource(
        landing_dir=str(tmp_path / "landing"),
        quarantine_dir=str(tmp_path / "quarantine"),
        schema_path=str(tmp_path / "schema.json"),
    )


def _land(tmp_path: Path, partition: str, value: float) -> None:
    (tmp_path / "landing").mkdir(exist_ok=True)
    pd.DataFrame({"item_id": ["a"], "x": [value]}).to_parquet(
        tmp_path / "landing" / f"{partition}.parquet"
    )


@pytest.fixture(scope="module")
def definitions(tmp_path_factory):
    """The project's real definitions (loading them touches no service)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HITL_HOME", str(tmp_path_factory.mktemp("home")))
        from hitl_pipeline.definitions import defs

        yield defs()


@pytest.fixture
def tick(definitions):
    """Evaluate one sensor tick as the daemon would, against the real definitions."""

    def evaluate(sensor, cursor=None, instance=None, **resources):
        context = dg.build_sensor_context(
            cursor=cursor, instance=instance, resources=resources, definitions=definitions
        )
        return sensor.evaluate_tick(context)

    return evaluate


# --- landing sensor -------------------------------------------------------------------
def test_landing_first_batch(tmp_path, tick):
    _land(tmp_path, "2026-06-01", 1.0)
    result = tick(landing_sensor, production=_source(tmp_path))
    assert [r.partition_key for r in result.run_requests] == ["2026-06-01"]
    assert set(json.loads(result.cursor)) == {"2026-06-01"}


def test_landing_nothing_new(tmp_path, tick):
    _land(tmp_path, "2026-06-01", 1.0)
    first = tick(landing_sensor, production=_source(tmp_path))
    second = tick(landing_sensor, cursor=first.cursor, production=_source(tmp_path))
    assert second.run_requests == []
    assert "no new" in second.skip_message
    assert second.cursor == first.cursor


def test_landing_corrected_file_and_new_batch(tmp_path, tick):
    _land(tmp_path, "2026-06-01", 1.0)
    first = tick(landing_sensor, production=_source(tmp_path))
    _land(tmp_path, "2026-06-01", 2.0)  # a corrected file replaces the rejected one
    _land(tmp_path, "2026-06-08", 1.0)
    second = tick(landing_sensor, cursor=first.cursor, production=_source(tmp_path))
    assert sorted(r.partition_key for r in second.run_requests) == ["2026-06-01", "2026-06-08"]
    keys = {r.run_key for r in second.run_requests}
    assert all(k not in first.cursor for k in keys)
    assert json.loads(second.cursor) != json.loads(first.cursor)


def test_landing_ignores_dates_before_the_partitions(tmp_path, tick):
    _land(tmp_path, "2019-01-01", 1.0)
    result = tick(landing_sensor, production=_source(tmp_path))
    assert result.run_requests == []


# --- annotation sensor ----------------------------------------------------------------
class FakeLabelStudio:
    """Stands in for LabelStudioResource.queue_status only; touches no server."""

    def __init__(self, status: QueueStatus | None):
        self.status = status

    def queue_status(self) -> QueueStatus:
        if self.status is None:
            raise LabelStudioUnavailable("Label Studio at http://127.0.0.1:1 is not reachable")
        return self.status


T1 = datetime(2026, 6, 2, 10, 0, tzinfo=UTC)


def test_annotations_first_seen_are_collected(tick):
    ls = FakeLabelStudio(QueueStatus(total_tasks=10, finished_tasks=4, latest_completed_at=T1))
    with dg.instance_for_test() as instance:
        result = tick(annotation_sensor, instance=instance, label_studio=ls)
    assert [r.job_name for r in result.run_requests] == [collect_labels_job.name]
    assert result.cursor == T1.isoformat()


def test_annotations_not_requested_twice_while_a_collection_waits(tick):
    ls = FakeLabelStudio(QueueStatus(total_tasks=10, finished_tasks=4, latest_completed_at=T1))
    with dg.instance_for_test() as instance:
        first = tick(annotation_sensor, instance=instance, label_studio=ls)
        waiting = dg.DagsterRun(
            job_name=collect_labels_job.name,
            run_id="waiting",
            status=dg.DagsterRunStatus.NOT_STARTED,
        )
        instance.add_run(waiting)
        later = FakeLabelStudio(
            QueueStatus(total_tasks=10, finished_tasks=6, latest_completed_at=T1.replace(hour=11))
        )
        second = tick(annotation_sensor, cursor=first.cursor, instance=instance, label_studio=later)
    assert [r.job_name for r in first.run_requests] == [collect_labels_job.name]
    assert second.run_requests == []
    assert "already waiting" in second.skip_message
    assert second.cursor == first.cursor


def test_annotations_nothing_new(tick):
    ls = FakeLabelStudio(QueueStatus(total_tasks=10, finished_tasks=4, latest_completed_at=T1))
    with dg.instance_for_test() as instance:
        result = tick(annotation_sensor, cursor=T1.isoformat(), instance=instance, label_studio=ls)
    assert result.run_requests == []
    assert result.cursor == T1.isoformat()


def test_annotations_label_studio_down_skips_and_keeps_cursor(tick):
    with dg.instance_for_test() as instance:
        result = tick(
            annotation_sensor,
            cursor=T1.isoformat(),
            instance=instance,
            label_studio=FakeLabelStudio(None),
        )
    assert result.run_requests == []
    assert "not reachable" in result.skip_message
    assert result.cursor == T1.isoformat()


# --- drift alerts -> boosted review, and early retrain ---------------------------------
@dg.asset(
    name="drift_report",
    partitions_def=BATCH_PARTITIONS,
    check_specs=[dg.AssetCheckSpec(NO_DRIFT_CHECK, asset="drift_report")],
    config_schema={"drift": bool},
)
def stand_in_drift_report(context: dg.AssetExecutionContext):
    yield dg.Output(None)
    yield dg.AssetCheckResult(check_name=NO_DRIFT_CHECK, passed=not context.op_config["drift"])


@dg.asset(name="labeling_tasks")
def stand_in_labeling_tasks() -> None:
    """Stands in for the push: only its materialization time matters to the sensor."""


def _drift_run(instance, partition: str, drift: bool) -> None:
    result = dg.materialize(
        [stand_in_drift_report],
        instance=instance,
        partition_key=partition,
        run_config={"ops": {"drift_report": {"config": {"drift": drift}}}},
    )
    assert result.success


def test_drift_sensor_scenarios(tick):
    with dg.instance_for_test() as instance:
        # no check evaluated yet
        assert tick(drift_alert_sensor, instance=instance).run_requests == []
        # a passing check is no alert
        _drift_run(instance, "2026-06-01", drift=False)
        quiet = tick(drift_alert_sensor, instance=instance)
        assert quiet.run_requests == [] and quiet.cursor is None
        # a failing check requests the boosted review of that partition
        _drift_run(instance, "2026-06-08", drift=True)
        alert = tick(drift_alert_sensor, instance=instance)
        assert [r.partition_key for r in alert.run_requests] == ["2026-06-08"]
        assert alert.run_requests[0].tags["hitl/trigger"] == "drift_alert"
        # the same alert is not acted on twice
        again = tick(drift_alert_sensor, cursor=alert.cursor, instance=instance)
        assert again.run_requests == [] and again.cursor == alert.cursor
        # a later alert is
        _drift_run(instance, "2026-06-15", drift=True)
        later = tick(drift_alert_sensor, cursor=alert.cursor, instance=instance)
        assert [r.partition_key for r in later.run_requests] == ["2026-06-15"]
        assert int(later.cursor) > int(alert.cursor)

        # the queue looks done, but the boosted review has not reached Label Studio yet:
        # only collect
        done = FakeLabelStudio(QueueStatus(total_tasks=8, finished_tasks=8, latest_completed_at=T1))
        waiting = tick(annotation_sensor, instance=instance, label_studio=done)
        assert [r.job_name for r in waiting.run_requests] == [collect_labels_job.name]
        # a regular scoring run's push (right after its own drift check) is not the
        # boosted review either
        assert dg.materialize(
            [stand_in_labeling_tasks], instance=instance, tags={"hitl/trigger": "new_batch"}
        ).success
        regular = tick(annotation_sensor, instance=instance, label_studio=done)
        assert [r.job_name for r in regular.run_requests] == [collect_labels_job.name]
        # once the boosted review was pushed and is done, the annotation sensor retrains
        # early instead of only collecting
        assert dg.materialize(
            [stand_in_labeling_tasks], instance=instance, tags={"hitl/trigger": "drift_alert"}
        ).success
        early = tick(annotation_sensor, instance=instance, label_studio=done)
        assert [r.job_name for r in early.run_requests] == [retrain_job.name]
        # while people are still reviewing, it only collects
        busy = FakeLabelStudio(QueueStatus(total_tasks=9, finished_tasks=8, latest_completed_at=T1))
        collect = tick(annotation_sensor, instance=instance, label_studio=busy)
        assert [r.job_name for r in collect.run_requests] == [collect_labels_job.name]


@pytest.mark.parametrize("partition", ["2026-06-01"])
def test_partition_keys_cover_demo_dates(partition):
    assert BATCH_PARTITIONS.has_partition_key(partition)
