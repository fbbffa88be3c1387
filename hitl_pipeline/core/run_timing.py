"""Where a run's wall time goes: waiting, starting, computing, or orchestration between steps.

A loop that cannot keep pace with its batches is usually not slow at computing: it pays
for a queue, for a fresh Python process per run (and, with the multiprocess executor, per
step), and for the gaps between steps. This splits each run's time from its creation to
its end into four parts, from the timestamps the Dagster event log holds:

- ``queued``: created until launched (the run queue's wait for a free slot);
- ``startup``: launched until the run worker reported it started (a process, imports, the
  definitions loaded);
- ``steps``: the time covered by at least one step between its start and its end
  (overlapping steps count once);
- ``orchestration``: the rest of the execution: step processes starting, events
  written, inputs loaded and outputs stored between the steps.

Pure: takes plain timestamps, knows nothing of Dagster.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PARTS = ("queued", "startup", "steps", "orchestration")


@dataclass(frozen=True)
class RunTimes:
    """The timestamps (seconds since the epoch) of one finished run."""

    run_id: str
    job: str
    created: float
    launched: float | None  # RUN_STARTING; None when the run never went through a launch
    started: float | None  # RUN_START: the run worker is up
    ended: float
    steps: tuple[tuple[float, float], ...]  # (start, end) per step


@dataclass(frozen=True)
class TimeParts:
    """A wall time split into the four parts (seconds)."""

    job: str
    total: float
    queued: float
    startup: float
    steps: float
    orchestration: float

    @property
    def overhead(self) -> float:
        """What the machinery costs: start-up and orchestration (the queue's wait is other
        runs' time, not this run's cost)."""
        return self.startup + self.orchestration

    @property
    def overhead_share(self) -> float:
        """Share of the run's own time (launch to end) not spent inside a step."""
        own = self.startup + self.steps + self.orchestration
        return 0.0 if own <= 0 else self.overhead / own


@dataclass(frozen=True)
class RunBreakdown(TimeParts):
    """One run's wall time split into the four parts."""

    run_id: str = ""


def covered(intervals: Iterable[tuple[float, float]]) -> float:
    """Length of the union of intervals: parallel steps count once."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def breakdown(run: RunTimes) -> RunBreakdown:
    """Split one run's wall time; parts are never negative and add up to the total."""
    launched = run.launched if run.launched is not None else run.created
    started = run.started if run.started is not None else launched
    launched = min(max(launched, run.created), run.ended)
    started = min(max(started, launched), run.ended)
    inside = [(max(s, started), min(e, run.ended)) for s, e in run.steps]
    steps = covered((s, e) for s, e in inside if e > s)
    execution = run.ended - started
    return RunBreakdown(
        run_id=run.run_id,
        job=run.job,
        total=run.ended - run.created,
        queued=launched - run.created,
        startup=started - launched,
        steps=steps,
        orchestration=max(0.0, execution - steps),
    )


@dataclass(frozen=True)
class JobTiming(TimeParts):
    """Medians of the parts over a job's runs."""

    runs: int = 0


def per_job(runs: Sequence[RunBreakdown]) -> list[JobTiming]:
    """Median of each part per job, jobs in order of first appearance."""
    jobs: dict[str, list[RunBreakdown]] = {}
    for run in runs:
        jobs.setdefault(run.job, []).append(run)
    return [
        JobTiming(
            job=job,
            runs=len(items),
            total=statistics.median(r.total for r in items),
            queued=statistics.median(r.queued for r in items),
            startup=statistics.median(r.startup for r in items),
            steps=statistics.median(r.steps for r in items),
            orchestration=statistics.median(r.orchestration for r in items),
        )
        for job, items in jobs.items()
    ]


def render(timings: Sequence[JobTiming]) -> str:
    """A plain-text table a person reads in the terminal."""
    header = f"{'job':<20} {'runs':>4}  " + "  ".join(
        f"{p:>13}" for p in ("total", *PARTS, "overhead")
    )
    lines = [header, "-" * len(header)]
    for t in timings:
        cells = [t.total, t.queued, t.startup, t.steps, t.orchestration]
        lines.append(
            f"{t.job:<20} {t.runs:>4}  "
            + "  ".join(f"{c:>12.1f}s" for c in cells)
            + f"  {t.overhead_share:>12.0%}"
        )
    return "\n".join(lines)
