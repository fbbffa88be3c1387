"""The demo's terminal: the loop's events as one line each, read from the Dagster instance.

:class:`Narrator` follows the runs created after it started, reading each run's event
log from its own cursor, so every event is told once and in order, whichever process
ran it (``dagster dev``'s run workers, or the headless loop in this process). The lines
themselves come from :mod:`hitl_pipeline.core.narration`. Also here: the targeted
silencing of third-party notices a user cannot act on, waiting for a UI to answer, and
progress bars over a run's steps.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import httpx
from tqdm import tqdm

from hitl_pipeline.core.narration import LoopEvent, narrate, queue_line
from hitl_pipeline.core.types import QueueStatus

TRIGGER_TAG = "hitl/trigger"
PARTITION_TAG = "dagster/partition"
GATE_CHECK = "passes_gate"
# after these, the Label Studio queue depth is worth a line
_QUEUE_CHANGERS = frozenset({"labeling_tasks", "human_labels"})
_FINISHED = frozenset(
    {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
)
_NOT_STARTED = frozenset({dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED})
_EVENTS = {
    dg.DagsterEventType.ASSET_MATERIALIZATION,
    dg.DagsterEventType.ASSET_CHECK_EVALUATION,
    dg.DagsterEventType.RUN_FAILURE,
}


@dataclass
class _RunState:
    cursor: str | None = None
    announced: bool = False
    gate_rejected: bool = False


@dataclass
class Narrator:
    """Turns the loop's Dagster events into terminal lines, each event once.

    Args:
        instance: the loop's Dagster instance.
        queue_status: Label Studio's queue, asked after tasks were pushed or answers
            pulled; None leaves the queue line out.
        from_start: tell every run in the instance; by default only runs created after
            the narrator was made.
    """

    instance: dg.DagsterInstance
    queue_status: Callable[[], QueueStatus] | None = None
    from_start: bool = False
    _after: str | None = field(default=None, init=False)  # runs after this one are told
    _runs: dict[str, _RunState] = field(default_factory=dict, init=False)
    _done: set[str] = field(default_factory=set, init=False)
    # the last line told per (check, partition): a check re-evaluated with the same
    # verdict (each annotation pull re-runs the audit check) is told once
    _checks: dict[tuple[str, str | None], str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        # the run storage's own order (its row id), not creation times (second precision)
        if not self.from_start:
            newest = self.instance.get_run_records(limit=1)
            self._after = newest[0].dagster_run.run_id if newest else None

    def poll(self) -> list[str]:
        """Lines for every event written since the last poll, oldest first."""
        lines: list[str] = []
        queue_changed = False
        records = self.instance.get_run_records(cursor=self._after, ascending=True)
        settled = True  # every run so far is told in full: the cursor may move past it
        for record in records:
            run = record.dagster_run
            if run.run_id in self._done:
                if settled:
                    self._after = run.run_id
                    self._done.discard(run.run_id)
                continue
            if run.status in _NOT_STARTED:
                settled = False
                continue
            finished = run.status in _FINISHED  # read before the events: none can follow
            state = self._runs.setdefault(run.run_id, _RunState())
            trigger = str(run.tags.get(TRIGGER_TAG, ""))
            if not state.announced:
                state.announced = True
                lines += _told(
                    LoopEvent(
                        kind="run_started", name=run.job_name, trigger=trigger, run_id=run.run_id
                    )
                )
            partition = run.tags.get(PARTITION_TAG)
            for event in self._new_events(run.run_id, state):
                if event.partition is None and partition and event.kind != "run_failed":
                    # a check of a partitioned run that is not partitioned itself
                    event = dataclasses.replace(event, partition=partition)
                if event.kind == "check" and event.name == GATE_CHECK and event.passed is False:
                    state.gate_rejected = True
                if event.kind == "run_failed":
                    event = LoopEvent(
                        kind="run_failed",
                        name=run.job_name,
                        metadata={"gate_rejected": state.gate_rejected},
                        description=event.description,
                        trigger=trigger,
                        run_id=run.run_id,
                    )
                queue_changed |= event.kind == "materialization" and event.name in _QUEUE_CHANGERS
                lines += self._unrepeated(event)
            if finished:
                del self._runs[run.run_id]
                if settled:
                    self._after = run.run_id
                else:
                    self._done.add(run.run_id)
            else:
                settled = False
        if queue_changed and self.queue_status is not None:
            try:
                lines.append(queue_line(self.queue_status()))
            except Exception as exc:  # a down Label Studio costs the line, not the demo
                lines.append(f"Label Studio queue: not reachable ({type(exc).__name__})")
        return lines

    def _unrepeated(self, event: LoopEvent) -> list[str]:
        lines = _told(event)
        if event.kind != "check" or not lines:
            return lines
        key = (event.name, event.partition)
        if self._checks.get(key) == lines[0]:
            return []
        self._checks[key] = lines[0]
        return lines

    def _new_events(self, run_id: str, state: _RunState) -> Iterator[LoopEvent]:
        while True:
            connection = self.instance.get_records_for_run(
                run_id, cursor=state.cursor, of_type=_EVENTS
            )
            state.cursor = connection.cursor
            for record in connection.records:
                event = loop_event(record.event_log_entry)
                if event is not None:
                    yield event
            if not connection.has_more:
                return


def _told(event: LoopEvent) -> list[str]:
    line = narrate(event)
    return [line] if line is not None else []


def loop_event(entry: Any) -> LoopEvent | None:
    """A Dagster event log entry as the facts the narration needs (None: not ours)."""
    event = entry.dagster_event
    if event is None:
        return None
    if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
        mat = entry.asset_materialization
        return LoopEvent(
            kind="materialization",
            name=mat.asset_key.to_user_string(),
            partition=mat.partition,
            metadata=plain(mat.metadata),
            run_id=entry.run_id,
        )
    if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
        evaluation = event.event_specific_data
        return LoopEvent(
            kind="check",
            name=evaluation.check_name,
            partition=evaluation.partition,
            metadata=plain(evaluation.metadata),
            passed=bool(evaluation.passed),
            description=evaluation.description or "",
            run_id=entry.run_id,
            warning=evaluation.severity == dg.AssetCheckSeverity.WARN,
        )
    if event.event_type == dg.DagsterEventType.RUN_FAILURE:
        return LoopEvent(
            kind="run_failed",
            name=event.job_name,
            description=_failure_reason(event) or entry.user_message or "",
            run_id=entry.run_id,
        )
    return None


def _failure_reason(event: Any) -> str | None:
    data = event.event_specific_data
    step = getattr(data, "first_step_failure_event", None)
    step_data = getattr(step, "event_specific_data", None) if step is not None else None
    user = getattr(step_data, "user_failure_data", None)
    if user is not None and user.description:
        return str(user.description)
    error = getattr(step_data, "error", None) or getattr(data, "error", None)
    return error.message.strip() if error is not None and error.message else None


def plain(metadata: Any) -> dict[str, Any]:
    """Dagster metadata values as the plain values they wrap."""
    return {str(k): getattr(v, "value", v) for k, v in (metadata or {}).items()}


class NarratorThread(threading.Thread):
    """Polls a :class:`Narrator` every ``every_s`` seconds and prints its lines."""

    def __init__(
        self, narrator: Narrator, *, every_s: float = 3.0, out: Callable[[str], None] = print
    ):
        super().__init__(name="hitl-narrator", daemon=True)
        self.narrator, self.every_s, self.out = narrator, every_s, out
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.tell()
            self._stop_event.wait(self.every_s)
        self.tell()  # what happened while stopping

    def tell(self) -> None:
        try:
            lines = self.narrator.poll()
        except Exception as exc:  # the instance is being written: try again next time
            logging.getLogger(__name__).debug("narrator poll failed: %s", exc)
            return
        for line in lines:
            self.out(f"{time.strftime('%H:%M:%S')} {line}")

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop_event.set()
        self.join(timeout=timeout_s)


# --- silence what a user cannot act on -------------------------------------------------
# (logger, message prefix): notices about how a library works, not about the loop.
THIRD_PARTY_NOTICES: tuple[tuple[str, str], ...] = (
    # we log our own pipeline with cloudpickle on purpose (skops refuses our classes)
    ("mlflow.sklearn", "Saving scikit-learn models in the pickle or cloudpickle format"),
    # pip requirements are given explicitly; pip is not in the uv-made environment
    ("mlflow.utils.environment", "Failed to resolve installed pip version"),
    ("mlflow.utils.environment", "Detected uv project"),
    ("mlflow.utils.uv_utils", "Detected uv project"),
    ("mlflow.store.db.utils", "Creating initial MLflow database tables"),
    ("mlflow.store.db.utils", "Updating database tables"),
    # the dataset repository is ours: `dvc init` and staging hints are for a person's repo
    ("dvc.repo.init", "Initialized DVC repository"),
    ("dvc.repo.init", "You can now commit the changes to git"),
    ("dvc.repo.scm_context", "\nTo track the changes with git"),
    ("dvc.repo.scm_context", "\nTo enable auto staging"),
)


class _DropPrefixes(logging.Filter):
    def __init__(self, prefixes: Sequence[str]):
        super().__init__()
        self.prefixes = tuple(prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_third_party() -> None:
    """Drop the notices in :data:`THIRD_PARTY_NOTICES` and Dagster's preview and beta
    warnings (the project pins Dagster; the user cannot act on them) in this process.
    Everything else those libraries log or warn still shows. Idempotent."""
    by_logger: dict[str, list[str]] = {}
    for name, prefix in THIRD_PARTY_NOTICES:
        by_logger.setdefault(name, []).append(prefix)
    for name, prefixes in by_logger.items():
        logger = logging.getLogger(name)
        logger.filters = [f for f in logger.filters if not isinstance(f, _DropPrefixes)]
        logger.addFilter(_DropPrefixes(prefixes))
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)


# --- waiting, with a bar on a terminal -------------------------------------------------
def wait_until_answering(
    url: str,
    *,
    what: str,
    timeout_s: float,
    alive: Callable[[], bool] = lambda: True,
    every_s: float = 1.0,
) -> bool:
    """Poll ``url`` until it answers HTTP 200, showing elapsed time on a terminal.

    Returns:
        True once it answered; False on timeout or when ``alive()`` says the process
        behind it stopped.
    """
    deadline = time.monotonic() + timeout_s
    bar = tqdm(
        desc=f"waiting for the {what}",
        total=int(timeout_s),
        unit="s",
        disable=None,  # no bar when the output is not a terminal
        leave=False,
        bar_format="{desc}: {elapsed} (gives up after {total} s)",
    )
    try:
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() < deadline and alive():
                try:
                    if client.get(url).status_code == 200:
                        return True
                except httpx.HTTPError:
                    pass
                time.sleep(every_s)
                bar.update(0)
                bar.refresh()
        return False
    finally:
        bar.close()


@contextmanager
def run_progress(
    instance: dg.DagsterInstance, run_id: str, *, steps: int, desc: str, every_s: float = 1.0
) -> Iterator[None]:
    """A bar over the steps of run ``run_id`` while the body executes it (terminal only)."""
    if not (sys.stderr.isatty() and steps > 0):
        yield
        return
    bar = tqdm(desc=desc, total=steps, unit="step", leave=False)
    stop = threading.Event()
    done_types = {
        dg.DagsterEventType.STEP_SUCCESS,
        dg.DagsterEventType.STEP_FAILURE,
        dg.DagsterEventType.STEP_SKIPPED,
    }

    def follow() -> None:
        cursor, done = None, 0
        while not stop.wait(every_s):
            try:
                connection = instance.get_records_for_run(run_id, cursor=cursor, of_type=done_types)
            except Exception:  # the run is not stored yet
                continue
            cursor = connection.cursor
            if connection.records:
                done += len(connection.records)
                bar.update(min(done, steps) - bar.n)

    thread = threading.Thread(target=follow, name="hitl-run-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        bar.close()
