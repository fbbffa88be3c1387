"""Sensors, one test per cursor scenario, asserting the run requests and the new cursor.

The landing sensor reads a real landing folder in a temporary directory; the annotation
sensor gets a duck-typed Label Studio stand-in (no server is touched here; the
end-to-end test drives the real one); the drift sensor reads real asset-check records
that a small stand-in asset writes into an ephemeral Dagster instance.
"""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from hitl_pipeline.core.types import QueueStatus
from hitl_pipeline.defs.automation import (
    DRIFT_CHECK_KEY,
    annotation_sensor,
    collect_labels_job,
    drift_alert_sensor,
    landing_sensor,
    retrain_job,
    weekly_retrain_schedule,
)
from hitl_pipeline.defs.partitions import BATCH_PARTITIONS
from hitl_pipeline.defs.s03_monitoring import NO_DRIFT_CHECK
from hitl_pipeline.internals import asset_check_status, schedule_ticks
from hitl_pipeline.resources.label_studio import LabelStudioUnavailable
from hitl_pipeline.resources.production import ProductionSource

Status = asset_check_status()


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


# --- landing sensor -------------------------------------------------------------------
def _fingerprints(tmp_path: Path) -> dict[str, str]:
    """Partition -> content fingerprint of every file now in the landing folder."""
    return {b.partition_key: b.fingerprint for b in _source(tmp_path).list_batches()}


def test_landing_first_batch(tmp_path, tick):
    _land(tmp_path, "2026-06-01", 1.0)
    landed = _fingerprints(tmp_path)
    result = tick(landing_sensor, production=_source(tmp_path))
    assert [(r.partition_key, r.run_key) for r in result.run_requests] == [
        ("2026-06-01", f"batch:2026-06-01:{landed['2026-06-01']}")
    ]
    assert result.run_requests[0].tags["hitl/trigger"] == "new_batch"
    assert json.loads(result.cursor) == landed


def test_landing_nothing_new(tmp_path, tick):
    _land(tmp_path, "2026-06-01", 1.0)
    first = tick(landing_sensor, production=_source(tmp_path))
    second = tick(landing_sensor, cursor=first.cursor, production=_source(tmp_path))
    assert second.run_requests == []
    assert second.skip_message == (
        "no new or changed batch files: 1 batch(es) already scored, newest 2026-06-01 "
        "(1 file(s) in the landing folder)"
    )
    assert json.loads(second.cursor) == _fingerprints(tmp_path)


def test_landing_corrected_file_and_new_batch(tmp_path, tick):
    _land(tmp_path, "2026-06-01", 1.0)
    first = tick(landing_sensor, production=_source(tmp_path))
    rejected = _fingerprints(tmp_path)["2026-06-01"]
    _land(tmp_path, "2026-06-01", 2.0)  # a corrected file replaces the rejected one
    _land(tmp_path, "2026-06-08", 1.0)
    landed = _fingerprints(tmp_path)
    assert landed["2026-06-01"] != rejected  # the correction is a different file
    second = tick(landing_sensor, cursor=first.cursor, production=_source(tmp_path))
    assert sorted((r.partition_key, r.run_key) for r in second.run_requests) == [
        ("2026-06-01", f"batch:2026-06-01:{landed['2026-06-01']}"),
        ("2026-06-08", f"batch:2026-06-08:{landed['2026-06-08']}"),
    ]
    # the cursor now remembers the corrected file, so it is not scored a third time
    assert json.loads(second.cursor) == landed
    third = tick(landing_sensor, cursor=second.cursor, production=_source(tmp_path))
    assert third.run_requests == [] and json.loads(third.cursor) == landed


def test_landing_only_the_changed_file_is_rescored(tmp_path, tick):
    _land(tmp_path, "2026-06-01", 1.0)
    _land(tmp_path, "2026-06-08", 1.0)
    first = tick(landing_sensor, production=_source(tmp_path))
    assert sorted(r.partition_key for r in first.run_requests) == ["2026-06-01", "2026-06-08"]
    _land(tmp_path, "2026-06-08", 3.0)
    landed = _fingerprints(tmp_path)
    second = tick(landing_sensor, cursor=first.cursor, production=_source(tmp_path))
    assert [(r.partition_key, r.run_key) for r in second.run_requests] == [
        ("2026-06-08", f"batch:2026-06-08:{landed['2026-06-08']}")
    ]
    assert json.loads(second.cursor) == landed


def test_landing_ignores_dates_before_the_partitions(tmp_path, tick):
    _land(tmp_path, "2019-01-01", 1.0)
    result = tick(landing_sensor, production=_source(tmp_path))
    assert result.run_requests == []
    assert json.loads(result.cursor) == {}  # never remembered: it is outside the range


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
    assert [(r.job_name, r.run_key) for r in result.run_requests] == [
        (collect_labels_job.name, f"collect:{T1.isoformat()}")
    ]
    assert result.cursor == T1.isoformat()


def test_annotations_newer_than_the_cursor_are_collected(tick):
    later = T1.replace(hour=11)
    ls = FakeLabelStudio(QueueStatus(total_tasks=10, finished_tasks=6, latest_completed_at=later))
    with dg.instance_for_test() as instance:
        result = tick(annotation_sensor, cursor=T1.isoformat(), instance=instance, label_studio=ls)
    assert [(r.job_name, r.run_key) for r in result.run_requests] == [
        (collect_labels_job.name, f"collect:{later.isoformat()}")
    ]
    assert result.cursor == later.isoformat()


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
    assert first.cursor == T1.isoformat()
    assert second.run_requests == []
    assert "already waiting" in second.skip_message
    assert second.cursor == T1.isoformat()  # a later tick asks again for 11:00


def test_annotations_nothing_new(tick):
    ls = FakeLabelStudio(QueueStatus(total_tasks=10, finished_tasks=4, latest_completed_at=T1))
    with dg.instance_for_test() as instance:
        result = tick(annotation_sensor, cursor=T1.isoformat(), instance=instance, label_studio=ls)
    assert result.run_requests == []
    assert result.skip_message == (
        f"no new annotations (6 tasks pending): none answered since {T1.isoformat()}, "
        f"newest answer {T1.isoformat()}"
    )
    assert result.cursor == T1.isoformat()


def test_annotations_none_finished_yet(tick):
    ls = FakeLabelStudio(QueueStatus(total_tasks=10, finished_tasks=0, latest_completed_at=None))
    with dg.instance_for_test() as instance:
        result = tick(annotation_sensor, instance=instance, label_studio=ls)
    assert result.run_requests == []
    assert result.skip_message == "no new annotations (10 tasks pending): none answered yet"
    assert result.cursor is None


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


def _drift_run(instance: dg.DagsterInstance, partition: str, drift: bool) -> int:
    """Evaluate the drift check on one partition; returns the id of its check record."""
    result = dg.materialize(
        [stand_in_drift_report],
        instance=instance,
        partition_key=partition,
        run_config={"ops": {"drift_report": {"config": {"drift": drift}}}},
    )
    assert result.success
    verdict = Status.FAILED if drift else Status.SUCCEEDED
    history = instance.event_log_storage.get_asset_check_execution_history(
        DRIFT_CHECK_KEY, limit=100, status={verdict}
    )
    (record,) = [r for r in history if r.run_id == result.run_id]
    return record.id


def _drift_requests(result) -> list[tuple[str, str, str]]:
    return [(r.partition_key, r.run_key, r.tags["hitl/trigger"]) for r in result.run_requests]


def test_drift_no_check_evaluated_yet(tick):
    with dg.instance_for_test() as instance:
        result = tick(drift_alert_sensor, instance=instance)
    assert result.run_requests == []
    assert result.skip_message == (
        "no new drift alerts since check record 0; no drift check evaluated yet"
    )
    assert result.cursor is None


def test_drift_passing_check_is_no_alert(tick):
    with dg.instance_for_test() as instance:
        passed = _drift_run(instance, "2026-06-01", drift=False)
        result = tick(drift_alert_sensor, instance=instance)
    assert result.run_requests == []
    assert result.skip_message == (
        "no new drift alerts since check record 0; latest drift check passed on partition "
        f"2026-06-01 (record {passed})"
    )
    assert result.cursor is None


def test_drift_first_alert_requests_the_boosted_review_of_its_partition(tick):
    with dg.instance_for_test() as instance:
        _drift_run(instance, "2026-06-01", drift=False)
        alert = _drift_run(instance, "2026-06-08", drift=True)
        result = tick(drift_alert_sensor, instance=instance)
    assert _drift_requests(result) == [("2026-06-08", f"drift:{alert}", "drift_alert")]
    assert result.cursor == str(alert)


def test_drift_same_alert_is_not_acted_on_twice(tick):
    with dg.instance_for_test() as instance:
        alert = _drift_run(instance, "2026-06-08", drift=True)
        newer = _drift_run(instance, "2026-06-15", drift=False)  # a newer, passing check
        result = tick(drift_alert_sensor, cursor=str(alert), instance=instance)
    assert result.run_requests == []
    assert result.skip_message == (
        f"no new drift alerts since check record {alert}; latest drift check passed on "
        f"partition 2026-06-15 (record {newer})"
    )
    assert result.cursor == str(alert)


def test_drift_later_alert_only(tick):
    with dg.instance_for_test() as instance:
        first = _drift_run(instance, "2026-06-08", drift=True)
        later = _drift_run(instance, "2026-06-15", drift=True)
        result = tick(drift_alert_sensor, cursor=str(first), instance=instance)
    assert later != first
    assert _drift_requests(result) == [("2026-06-15", f"drift:{later}", "drift_alert")]
    assert result.cursor == str(later)


def test_drift_two_alerts_in_one_tick_oldest_first(tick):
    with dg.instance_for_test() as instance:
        first = _drift_run(instance, "2026-06-08", drift=True)
        second = _drift_run(instance, "2026-06-15", drift=True)
        result = tick(drift_alert_sensor, instance=instance)
    assert _drift_requests(result) == [
        ("2026-06-08", f"drift:{first}", "drift_alert"),
        ("2026-06-15", f"drift:{second}", "drift_alert"),
    ]
    assert result.cursor == str(second)


def test_annotation_sensor_retrains_early_only_after_the_boosted_review(tick):
    done = FakeLabelStudio(QueueStatus(total_tasks=8, finished_tasks=8, latest_completed_at=T1))
    collect = [(collect_labels_job.name, f"collect:{T1.isoformat()}")]

    def requests(result):
        return [(r.job_name, r.run_key) for r in result.run_requests]

    with dg.instance_for_test() as instance:
        alert = _drift_run(instance, "2026-06-08", drift=True)
        # the queue looks done, but the boosted review has not reached Label Studio yet:
        # only collect
        waiting = tick(annotation_sensor, instance=instance, label_studio=done)
        assert requests(waiting) == collect and waiting.cursor == T1.isoformat()
        # a regular scoring run's push (right after its own drift check) is not the
        # boosted review either
        assert dg.materialize(
            [stand_in_labeling_tasks], instance=instance, tags={"hitl/trigger": "new_batch"}
        ).success
        regular = tick(annotation_sensor, instance=instance, label_studio=done)
        assert requests(regular) == collect and regular.cursor == T1.isoformat()
        # once the boosted review was pushed and is done, the annotation sensor retrains
        # early (once per alert) instead of only collecting
        assert dg.materialize(
            [stand_in_labeling_tasks], instance=instance, tags={"hitl/trigger": "drift_alert"}
        ).success
        early = tick(annotation_sensor, instance=instance, label_studio=done)
        assert requests(early) == [(retrain_job.name, f"early-retrain:{alert}")]
        assert early.run_requests[0].tags["hitl/trigger"] == "drift_early_retrain"
        assert early.cursor == T1.isoformat()
        # while people are still reviewing, it only collects
        busy = FakeLabelStudio(QueueStatus(total_tasks=9, finished_tasks=8, latest_completed_at=T1))
        still = tick(annotation_sensor, instance=instance, label_studio=busy)
        assert requests(still) == collect and still.cursor == T1.isoformat()
        # annotations already seen start nothing, drift or not
        seen = tick(annotation_sensor, cursor=T1.isoformat(), instance=instance, label_studio=done)
        assert seen.run_requests == [] and seen.cursor == T1.isoformat()


# --- the weekly retrain schedule -------------------------------------------------------
@pytest.mark.parametrize(
    ("now", "next_ticks"),
    [
        # a Wednesday: the coming Monday 06:00 UTC, then the one after
        ("2026-06-03T12:00:00+00:00", ["2026-06-08T06:00:00+00:00", "2026-06-15T06:00:00+00:00"]),
        # Monday before 06:00 UTC: the same morning
        ("2026-06-08T05:59:00+00:00", ["2026-06-08T06:00:00+00:00", "2026-06-15T06:00:00+00:00"]),
        # Monday just after 06:00 UTC: next week
        ("2026-06-08T06:00:01+00:00", ["2026-06-15T06:00:00+00:00", "2026-06-22T06:00:00+00:00"]),
        # 07:30 in Berlin on a Monday is 05:30 UTC: the tick is still to come that morning
        # (a schedule on Berlin time would already have ticked at 04:00 UTC)
        ("2026-06-08T07:30:00+02:00", ["2026-06-08T06:00:00+00:00", "2026-06-15T06:00:00+00:00"]),
        # winter time does not move it: still 06:00 UTC
        ("2026-12-30T00:00:00+00:00", ["2027-01-04T06:00:00+00:00", "2027-01-11T06:00:00+00:00"]),
    ],
)
def test_weekly_schedule_ticks_mondays_at_six_utc(definitions, now, next_ticks):
    # the iterator the Dagster daemon uses to decide when a schedule ticks
    schedule = definitions.resolve_schedule_def(weekly_retrain_schedule.name)
    assert schedule.cron_schedule == "0 6 * * 1"
    assert schedule.execution_timezone == "UTC"
    assert schedule.job_name == retrain_job.name
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    ticks = schedule_ticks(
        schedule.cron_schedule,
        datetime.fromisoformat(now).timestamp(),
        schedule.execution_timezone,
    )
    got = [next(ticks) for _ in next_ticks]
    assert [t.astimezone(UTC) for t in got] == [datetime.fromisoformat(t) for t in next_ticks]


class FakeRegistry:
    """Stands in for MlflowRegistryResource.champion only; touches no MLflow."""

    def __init__(self, champion: object | None):
        self._champion = champion

    def champion(self) -> object | None:
        return self._champion


@dg.asset(name="candidate_model")
def stand_in_candidate_model() -> None:
    """Stands in for a training run: only its materialization time matters to the schedule."""


def _weekly_tick(instance, label_studio, registry):
    context = dg.build_schedule_context(
        instance=instance,
        resources={"label_studio": label_studio, "registry": registry},
        scheduled_execution_time=datetime(2026, 6, 8, 6, 0, tzinfo=UTC),
    )
    return weekly_retrain_schedule.evaluate_tick(context)


def test_weekly_schedule_trains_the_first_champion():
    ls = FakeLabelStudio(QueueStatus(total_tasks=0, finished_tasks=0, latest_completed_at=None))
    with dg.instance_for_test() as instance:
        result = _weekly_tick(instance, ls, FakeRegistry(None))
    (request,) = result.run_requests
    assert request.tags["hitl/trigger"] == "weekly_schedule"
    assert "no champion yet" in request.tags["hitl/why"]


def test_weekly_schedule_retrains_only_when_labels_arrived_since_the_last_training():
    with dg.instance_for_test() as instance:
        assert dg.materialize([stand_in_candidate_model], instance=instance).success
        trained_at = datetime.fromtimestamp(
            instance.get_latest_materialization_event(dg.AssetKey("candidate_model")).timestamp,
            tz=UTC,
        )
        before = FakeLabelStudio(
            QueueStatus(8, 8, latest_completed_at=trained_at - timedelta(minutes=5))
        )
        after = FakeLabelStudio(
            QueueStatus(8, 8, latest_completed_at=trained_at + timedelta(minutes=5))
        )
        nothing = FakeLabelStudio(QueueStatus(0, 0, latest_completed_at=None))
        stale = _weekly_tick(instance, before, FakeRegistry("v1"))
        idle = _weekly_tick(instance, nothing, FakeRegistry("v1"))
        fresh = _weekly_tick(instance, after, FakeRegistry("v1"))
        down = _weekly_tick(instance, FakeLabelStudio(None), FakeRegistry("v1"))
    assert stale.run_requests == [] and stale.skip_message == (
        f"no new human labels since the last training ({trained_at.isoformat()}; newest "
        f"answer {(trained_at - timedelta(minutes=5)).isoformat()})"
    )
    assert idle.run_requests == [] and idle.skip_message == (
        f"no new human labels since the last training ({trained_at.isoformat()}; no answer "
        "in Label Studio)"
    )
    (request,) = fresh.run_requests
    assert request.tags["hitl/trigger"] == "weekly_schedule"
    assert request.tags["hitl/why"] == "human labels arrived since the last training"
    assert down.run_requests == [] and "not reachable" in down.skip_message


def test_every_sensor_and_the_schedule_say_what_they_do(definitions):
    """The UI shows these descriptions next to each tick's skip reason."""
    sensors = {s.name: s.description for s in definitions.sensors or ()}
    schedules = {s.name: s.description for s in definitions.schedules or ()}
    assert set(sensors) >= {
        "landing_sensor",
        "drift_alert_sensor",
        "concept_drift_sensor",
        "annotation_sensor",
        "recovery_sensor",
    }
    assert set(schedules) == {"weekly_retrain_schedule"}
    # Dagster does not fall back to the docstring: without description= the UI shows none
    for name, description in {**sensors, **schedules}.items():
        assert description and len(description) > 60, name


@pytest.mark.parametrize("partition", ["2026-06-01"])
def test_partition_keys_cover_demo_dates(partition):
    assert BATCH_PARTITIONS.has_partition_key(partition)
