"""When the demo lands its next batch: the decision table, and the pacer on a real instance."""

import dagster as dg
import pytest

from hitl_pipeline.demo.pacing import LoopState, Pacer, waiting_for


def state(**overrides):
    values = dict(last_batch_scored=True, active_runs=(), pending_tasks=0, quiet_for_s=60.0)
    return LoopState(**{**values, **overrides})


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({}, None),  # scored, nothing running, nothing open, quiet: land
        ({"last_batch_scored": False}, "the last batch is not scored yet"),
        (
            {"active_runs": ("retrain_job", "score_batch_job", "retrain_job")},
            "3 run(s) queued or running (retrain_job, score_batch_job)",
        ),
        ({"pending_tasks": 4}, "4 review task(s) still open"),
        ({"pending_tasks": None}, "Label Studio did not answer"),
        # answers just came in: the annotation sensor gets its tick first
        ({"quiet_for_s": 5.0}, "the sensors have not had a tick since the last activity"),
    ],
)
def test_waiting_for(overrides, reason):
    assert waiting_for(state(**overrides), quiet_s=30.0) == reason


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date="2025-01-01"))
def predictions() -> int:
    return 1


def test_pacer_on_a_real_instance():
    clock, pending = Clock(), {"n": 0}
    with dg.DagsterInstance.ephemeral() as instance:
        pacer = Pacer(
            instance,
            pending_tasks=lambda: pending["n"],
            min_interval_s=20.0,
            quiet_s=30.0,
            clock=clock,
        )
        assert pacer.waiting_for() == "the sensors have not had a tick since the last activity"
        clock.now += 31
        assert pacer.waiting_for() is None  # nothing landed yet, nothing running: go

        pacer.landed("2026-01-05")
        clock.now += 25
        assert pacer.waiting_for() == "the last batch is not scored yet"
        assert pacer.waiting_for(ready=False) is None  # --pace clock: only the interval

        assert dg.materialize([predictions], instance=instance, partition_key="2026-01-05").success
        pending["n"] = 3
        assert pacer.waiting_for() == "3 review task(s) still open"
        pending["n"] = 0
        pacer.answered(3)
        # the materialization's run ended and answers came in: wait one quiet period
        assert pacer.waiting_for() == "the sensors have not had a tick since the last activity"
        clock.now += 31
        assert pacer.waiting_for() is None

        pacer.landed("2026-01-12")
        assert pacer.waiting_for(ready=False) == "--interval: 20 s until the next batch may land"


def test_a_failed_scoring_run_does_not_hold_the_demo():
    @dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date="2025-01-01"))
    def predictions() -> int:
        raise ValueError("batch rejected")

    job = dg.define_asset_job("score_batch_job", selection=[predictions])
    defs = dg.Definitions(assets=[predictions], jobs=[job])
    clock = Clock()
    with dg.DagsterInstance.ephemeral() as instance:
        pacer = Pacer(instance, pending_tasks=lambda: 0, quiet_s=0.0, clock=clock)
        pacer.landed("2026-01-05")
        assert pacer.waiting_for() == "the last batch is not scored yet"
        result = defs.resolve_job_def("score_batch_job").execute_in_process(
            instance=instance, partition_key="2026-01-05", raise_on_error=False
        )
        assert not result.success
        assert pacer.waiting_for() is None
