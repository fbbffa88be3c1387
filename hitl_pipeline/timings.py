"""``hitl-pipeline timings``: where the loop's runs spend their time, read from the instance.

Reads only the Dagster instance's run records and event log (``core.run_timing`` does the
arithmetic). This is how the per-run overhead of an executor is measured: run the demo
with ``HITL_EXECUTOR=multiprocess`` and with ``in_process`` and compare the tables.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict

import dagster as dg

from hitl_pipeline.core.run_timing import JobTiming, RunBreakdown, RunTimes, breakdown

_FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]
_RUN_EVENTS = {dg.DagsterEventType.RUN_STARTING, dg.DagsterEventType.RUN_START}
_STEP_EVENTS = {
    dg.DagsterEventType.STEP_START,
    dg.DagsterEventType.STEP_SUCCESS,
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.STEP_SKIPPED,
}


def run_times(instance: dg.DagsterInstance, run_id: str, job: str, created: float) -> RunTimes:
    """The timestamps of one finished run from its event log."""
    launched = started = None
    ended = created
    opened: dict[str, float] = {}
    steps: list[tuple[float, float]] = []
    for entry in instance.all_logs(run_id, of_type=_RUN_EVENTS | _STEP_EVENTS):
        event = entry.dagster_event
        if event is None:
            continue
        stamp = float(entry.timestamp)
        ended = max(ended, stamp)
        if event.event_type == dg.DagsterEventType.RUN_STARTING:
            launched = stamp
        elif event.event_type == dg.DagsterEventType.RUN_START:
            started = stamp
        elif event.event_type == dg.DagsterEventType.STEP_START and event.step_key:
            opened[event.step_key] = stamp
        elif event.step_key and event.step_key in opened:
            steps.append((opened.pop(event.step_key), stamp))
    return RunTimes(
        run_id=run_id,
        job=job,
        created=created,
        launched=launched,
        started=started,
        ended=ended,
        steps=tuple(steps),
    )


def recent_breakdowns(instance: dg.DagsterInstance, *, limit: int = 50) -> list[RunBreakdown]:
    """The newest ``limit`` finished runs, oldest first, each split into its parts."""
    records = instance.get_run_records(filters=dg.RunsFilter(statuses=_FINISHED), limit=limit)
    out = []
    for record in reversed(records):
        run = record.dagster_run
        if record.end_time is None:
            continue
        times = run_times(instance, run.run_id, run.job_name, record.create_timestamp.timestamp())
        out.append(breakdown(times))
    return out


def to_json(timings: Sequence[JobTiming], runs: Sequence[RunBreakdown]) -> str:
    """Per job medians and every run's parts, as JSON."""
    jobs = [
        {**asdict(t), "overhead": t.overhead, "overhead_share": t.overhead_share} for t in timings
    ]
    return json.dumps(
        {"jobs": jobs, "runs": [{**asdict(r), "overhead": r.overhead} for r in runs]}, indent=2
    )
