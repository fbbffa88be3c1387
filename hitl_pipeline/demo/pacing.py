"""When the demo lands its next batch: when the loop is ready for it, not on a clock.

A fixed interval either wastes minutes (a fast machine waits for the clock) or buries a
slow one (batches pile up in the run queue faster than they are scored, reviewed and
learned from, and the first retrain starts behind five queued runs). The demo lands the
next batch once the loop has finished with the last one: it was scored, no run is
queued or running, people have answered every open task, and the sensors had one tick
to act on those answers (collect them, or start the early retrain after a drift alert).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

# The annotation sensor ticks every 20 s; the daemon adds a few seconds. After the last
# run ended and the last answer was submitted, the loop is quiet for this long before a
# new batch counts as welcome: long enough for that tick to start a collection or an
# early retrain, which then has the run queue to itself.
QUIET_S = 30.0
_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


_ENDED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


@dataclass(frozen=True)
class LoopState:
    """What the demo sees of the loop before it lands a batch."""

    last_batch_scored: bool  # the previous batch's predictions exist (or no batch yet)
    active_runs: tuple[str, ...]  # job names of runs queued or in progress
    pending_tasks: int | None  # open review tasks; None when Label Studio did not answer
    quiet_for_s: float  # since the last run ended or the last answer was submitted


def waiting_for(state: LoopState, *, quiet_s: float = QUIET_S) -> str | None:
    """Why the next batch should wait, or None when the loop is ready for it."""
    if not state.last_batch_scored:
        return "the last batch is not scored yet"
    if state.active_runs:
        jobs = ", ".join(sorted(set(state.active_runs)))
        return f"{len(state.active_runs)} run(s) queued or running ({jobs})"
    if state.pending_tasks is None:
        return "Label Studio did not answer"
    if state.pending_tasks > 0:
        return f"{state.pending_tasks} review task(s) still open"
    if state.quiet_for_s < quiet_s:
        return "the sensors have not had a tick since the last activity"
    return None


class Pacer:
    """Decides, each time the demo's loop asks, whether the next batch may land.

    Args:
        instance: The loop's Dagster instance.
        pending_tasks: Open review tasks in Label Studio (raises when it is down).
        min_interval_s: Never land two batches closer than this (``--interval``), even
            when the loop is ready sooner; 0 lands as soon as it is ready.
        clock: Monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        instance: dg.DagsterInstance,
        *,
        pending_tasks: Callable[[], int],
        min_interval_s: float = 0.0,
        quiet_s: float = QUIET_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.instance = instance
        self.pending_tasks = pending_tasks
        self.min_interval_s = min_interval_s
        self.quiet_s = quiet_s
        self.clock = clock
        self._last_landing: float | None = None
        self._last_activity = clock()
        self._last_partition: str | None = None
        self._seen_runs: frozenset[str] = frozenset()

    def landed(self, partition: str) -> None:
        """The demo dropped the batch of ``partition``."""
        self._last_partition = partition
        self._last_landing = self._last_activity = self.clock()

    def answered(self, count: int) -> None:
        """Simulated reviewers submitted ``count`` answers just now."""
        if count:
            self._last_activity = self.clock()

    def state(self) -> LoopState:
        """The loop as it is now (reads the instance and Label Studio)."""
        records = self.instance.get_run_records(filters=dg.RunsFilter(statuses=_ACTIVE))
        active = tuple(r.dagster_run.job_name for r in records)
        finished = self._finished_runs()
        if finished - self._seen_runs:
            self._last_activity = max(self._last_activity, self.clock())
        self._seen_runs = finished
        try:
            pending: int | None = self.pending_tasks()
        except Exception:  # Label Studio down or restarting: wait, and say why
            pending = None
        return LoopState(
            last_batch_scored=self._scored(self._last_partition),
            active_runs=active,
            pending_tasks=pending,
            quiet_for_s=self.clock() - self._last_activity,
        )

    def waiting_for(self, *, ready: bool = True) -> str | None:
        """Why the next batch waits, or None when it may land now.

        Args:
            ready: Also wait for the loop to be ready (``--pace ready``); False lands on
                the clock alone (``--pace clock``).
        """
        if self._last_landing is not None:
            wait = self.min_interval_s - (self.clock() - self._last_landing)
            if wait > 0:
                return f"--interval: {wait:.0f} s until the next batch may land"
        return waiting_for(self.state(), quiet_s=self.quiet_s) if ready else None

    def _finished_runs(self) -> frozenset[str]:
        records = self.instance.get_run_records(
            filters=dg.RunsFilter(
                statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]
            ),
            limit=20,
        )
        return frozenset(r.dagster_run.run_id for r in records)

    def _scored(self, partition: str | None) -> bool:
        """The batch was scored, or its scoring run ended without (a rejected batch must
        not hold the demo forever: the run's failure is in the UI and the terminal)."""
        if partition is None:
            return True
        if partition in self.instance.get_materialized_partitions(dg.AssetKey("predictions")):
            return True
        ended = self.instance.get_run_records(
            filters=dg.RunsFilter(
                job_name="score_batch_job",
                tags={"dagster/partition": partition},
                statuses=[dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED],
            ),
            limit=1,
        )
        return bool(ended)
