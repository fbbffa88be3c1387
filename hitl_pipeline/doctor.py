"""Recovery after a kill: put right what dead runs left in Dagster, MLflow and DVC.

A retrain killed mid-way (``kill -9``, an out-of-memory kill, a machine that reboots)
leaves state that nothing else ever cleans:

- its Dagster run stays STARTED for good: the default run launcher cannot check a run
  worker's health, so Dagster's own run monitoring only catches runs that never start,
  never finish cancelling or exceed ``max_runtime_seconds``;
- its MLflow run stays RUNNING;
- the model version it registered never gets a gate decision;
- the dataset repository's data files no longer match their ``.dvc`` files.

:func:`doctor` runs one check per store, in that order (the later ones judge by the
Dagster run's status the first one settles), and returns every fix it made. The rule
throughout: nothing written by a Dagster run that is still in progress is touched.
It runs from ``hitl-pipeline doctor``, from the daemon through the ``recovery_sensor``,
and at the start of the headless demo; ``DvcDatasetStore.commit`` runs the DVC part
itself before it writes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from hitl_pipeline.core.recovery import DAGSTER, DoctorReport, Fix, RunEnded

if TYPE_CHECKING:
    from hitl_pipeline.resources.dvc_store import DvcDatasetStore
    from hitl_pipeline.resources.mlflow_registry import MlflowRegistryResource

logger = logging.getLogger(__name__)

# Events written by the run's own processes: the run worker (RUN_START) and, with the
# multiprocess executor, each step's process (STEP_START). Events such as RUN_STARTING
# come from whoever launched the run (the daemon, the web server) and say nothing about
# whether the run itself is still alive.
_WORKER_EVENTS = {dg.DagsterEventType.RUN_START, dg.DagsterEventType.STEP_START}
# Process start times are known to a clock tick, the boot time to a second.
_START_TIME_SLACK_S = 2.0

ProcessAlive = Callable[[int, float], bool]


def process_alive(pid: int, since: float) -> bool:
    """Whether process ``pid`` runs and is the one that already ran at time ``since``.

    A zombie counts as dead. On Linux the process start time is read from ``/proc``, so a
    pid reused by a newer process also counts as dead; elsewhere only existence is known.

    Args:
        pid: The process id, as Dagster recorded it in an event.
        since: The event's timestamp (seconds since the epoch).
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text(encoding="utf-8").splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration):
        return True
    # The command name in parentheses may hold spaces; the fields after it are fixed.
    fields = stat.rpartition(")")[2].split()
    state, start_ticks = fields[0], int(fields[19])
    if state in ("Z", "X"):
        return False
    started = boot + start_ticks / os.sysconf("SC_CLK_TCK")
    return started <= since + _START_TIME_SLACK_S


def dagster_run_ended(instance: dg.DagsterInstance) -> RunEnded:
    """A judge of Dagster runs for the MLflow checks: None while a run is in progress.

    Any status that is not finished (queued, starting, started, cancelling...) counts as
    in progress; a run the instance does not know counts as ended.
    """

    def ended(run_id: str) -> str | None:
        run = instance.get_run_by_id(run_id)
        if run is None:
            return "not known to this Dagster instance"
        return run.status.value if run.is_finished else None

    return ended


def fail_dead_runs(
    instance: dg.DagsterInstance, *, alive: ProcessAlive = process_alive
) -> list[Fix]:
    """Mark failed the STARTED runs whose processes are all gone.

    Only for runs whose workers are processes on this machine (the default run launcher,
    and runs executed in-process); with any other launcher, Dagster's run monitoring
    checks the workers. A run that recorded no process id is left alone.

    Args:
        instance: The Dagster instance.
        alive: ``(pid, since) -> bool``; by default :func:`process_alive`.

    Returns:
        One fix per run marked failed.
    """
    if not isinstance(instance.run_launcher, dg.DefaultRunLauncher):
        return []
    fixes = []
    started = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    for record in started:
        run = record.dagster_run
        pids = _worker_pids(instance, run.run_id)
        if not pids or any(alive(pid, since) for pid, since in pids.items()):
            continue
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.status != dg.DagsterRunStatus.STARTED:
            continue  # it ended by itself meanwhile
        listed = ", ".join(str(pid) for pid in sorted(pids))
        reason = f"no process of the run is alive (pid {listed}): it was killed"
        instance.report_run_failed(current, f"Marked failed by hitl-pipeline doctor: {reason}.")
        # the pool slots its steps held would otherwise block every later run's steps
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        logger.warning("marked Dagster run %s failed: %s", run.run_id, reason)
        fixes.append(Fix(DAGSTER, f"run {run.run_id} ({run.job_name})", "marked failed", reason))
    return fixes


def _worker_pids(instance: dg.DagsterInstance, run_id: str) -> dict[int, float]:
    """Process id -> when it first wrote, for the run's worker and step processes."""
    pids: dict[int, float] = {}
    entries = instance.all_logs(run_id, of_type=_WORKER_EVENTS)
    for entry in entries:
        event = entry.dagster_event
        if event is not None and event.pid is not None:
            pids.setdefault(event.pid, entry.timestamp)
    return pids


def doctor(
    instance: dg.DagsterInstance,
    *,
    registry: MlflowRegistryResource | None = None,
    dataset_store: DvcDatasetStore | None = None,
    alive: ProcessAlive = process_alive,
) -> DoctorReport:
    """Run every recovery check and return what was fixed.

    A check that fails (a store out of reach) is reported in ``errors``; the others still
    run.

    Args:
        instance: The Dagster instance whose runs wrote to the stores.
        registry: The MLflow tracking store and model registry, if checked.
        dataset_store: The git + DVC dataset repository, if checked.
        alive: How a process is judged alive (see :func:`process_alive`).

    Returns:
        The fixes of all checks, Dagster's first.
    """
    ended = dagster_run_ended(instance)
    checks: list[tuple[str, Callable[[], Iterable[Fix]]]] = [
        ("dagster runs", lambda: fail_dead_runs(instance, alive=alive)),
    ]
    if registry is not None:
        checks += [
            ("mlflow runs", lambda: registry.fail_orphaned_runs(run_ended=ended)),
            ("registry versions", lambda: registry.abandon_undecided_versions(run_ended=ended)),
        ]
    if dataset_store is not None:
        checks.append(("dataset repository", dataset_store.recover))
    fixes: list[Fix] = []
    errors: list[str] = []
    for name, check in checks:
        try:
            fixes += check()
        except Exception as exc:  # one store out of reach must not stop the others
            logger.exception("recovery check %r failed", name)
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    return DoctorReport(fixes=tuple(fixes), errors=tuple(errors))
