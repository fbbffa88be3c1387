"""The demo's narrator against a real Dagster instance, and the silencing of notices.

Small assets named and described like the loop's write their events into a temporary
Dagster instance; the narrator reads them back from its cursor. No Label Studio, MLflow
or DVC is touched: the queue status is a stand-in function.
"""

from __future__ import annotations

import http.server
import logging
import socket
import threading
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg
import pytest

from hitl_pipeline.core.types import QueueStatus
from hitl_pipeline.demo.narrator import (
    THIRD_PARTY_NOTICES,
    Narrator,
    quiet_third_party,
    wait_until_answering,
)

BATCHES = dg.StaticPartitionsDefinition(["2026-01-12", "2026-01-19"])


@dg.asset(partitions_def=BATCHES)
def production_batch() -> dg.Output[int]:
    return dg.Output(400, metadata={"rows": 400, "quarantined_rows": 0})


@dg.asset(partitions_def=BATCHES, deps=[production_batch])
def predictions() -> dg.Output[int]:
    return dg.Output(400, metadata={"rows": 400, "model_version": "1", "mean_confidence": 0.8312})


@dg.asset(
    partitions_def=BATCHES,
    deps=[predictions],
    check_specs=[dg.AssetCheckSpec("no_dataset_drift", asset="drift_report")],
)
def drift_report() -> Iterator[dg.Output[int] | dg.AssetCheckResult]:
    yield dg.Output(1, metadata={"drift_share": 0.5})
    yield dg.AssetCheckResult(
        check_name="no_dataset_drift",
        passed=False,
        metadata={"drift_share": 0.5, "threshold": 0.5, "drifted_columns": ["x1", "x2"]},
    )


@dg.asset(partitions_def=BATCHES, deps=[drift_report])
def labeling_tasks() -> dg.Output[int]:
    return dg.Output(
        100, metadata={"tasks_created": 100, "tasks_already_present": 0, "tasks_by_tier": {}}
    )


@dg.asset
def candidate_model() -> dg.Output[int]:
    return dg.Output(2, metadata={"model_version": "2", "training_rows": 900})


@dg.asset_check(asset=candidate_model, blocking=True)
def passes_gate() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=False,
        description="23 recent held-out labels, 30 needed; calibration ok",
        metadata={"challenger_version": "2", "champion_version": "1"},
    )


@dg.asset(deps=[candidate_model])
def champion_model() -> dg.Output[int]:
    return dg.Output(2, metadata={"champion_version": "2", "previous_champion": "1"})


@dg.asset
def broken() -> None:
    raise dg.Failure(description="batch 2026-01-19.parquet rejected: no rows")


SCORING = [production_batch, predictions, drift_report, labeling_tasks]


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def _queue() -> QueueStatus:
    return QueueStatus(total_tasks=100, finished_tasks=20, latest_completed_at=datetime.now(UTC))


def test_each_event_told_once_in_order(instance: dg.DagsterInstance) -> None:
    dg.materialize(SCORING, instance=instance, partition_key="2026-01-12")  # before: not told
    narrator = Narrator(instance, queue_status=_queue)
    assert narrator.poll() == []

    dg.materialize(SCORING, instance=instance, partition_key="2026-01-19")
    assert narrator.poll() == [
        "[2026-01-19] batch landed: 400 valid rows",
        "[2026-01-19] rows scored: 400 by champion v1, mean confidence 0.83",
        "[2026-01-19] drift verdict: DRIFT (50% of columns drifted, alert at 50%): x1, x2; "
        "the drift sensor boosts this batch's review",
        "[2026-01-19] tasks pushed to Label Studio: 100 new",
        "Label Studio queue: 80 task(s) waiting, 20 of 100 answered",
    ]
    assert narrator.poll() == []  # nothing new: nothing twice


def test_gate_rejection_and_failed_run(instance: dg.DagsterInstance) -> None:
    narrator = Narrator(instance)
    result = dg.materialize(
        [candidate_model, passes_gate, champion_model],
        instance=instance,
        tags={"hitl/trigger": "schedule"},
        raise_on_error=False,
    )
    assert not result.success  # the blocking gate stopped the promotion
    dg.materialize([broken], instance=instance, raise_on_error=False, tags={"hitl/trigger": "x"})
    lines = narrator.poll()
    # the run that the gate stopped gets the gate's line, not a failure line
    assert lines == [
        "candidate v2 trained on 900 rows",
        "gate decision: KEEP champion v1, v2 rejected: 23 recent held-out labels, 30 needed",
        f"run {lines[2][4:12]} (__ephemeral_asset_job__, x) FAILED: "
        "batch 2026-01-19.parquet rejected: no rows; see the Dagster UI",
    ]
    assert narrator.poll() == []


def test_runs_told_as_they_progress(instance: dg.DagsterInstance) -> None:
    """A run still going is told up to where it is; the rest follows, nothing repeated."""
    narrator = Narrator(instance)
    dg.materialize([production_batch], instance=instance, partition_key="2026-01-12")
    first = narrator.poll()
    dg.materialize([predictions], instance=instance, partition_key="2026-01-12")
    second = narrator.poll()
    assert first == ["[2026-01-12] batch landed: 400 valid rows"]
    assert second == ["[2026-01-12] rows scored: 400 by champion v1, mean confidence 0.83"]


def test_a_check_re_evaluated_with_the_same_verdict_is_told_once(
    instance: dg.DagsterInstance,
) -> None:
    """Each annotation pull re-runs the audit check of the same batch: one line, not one
    per pull; the same check on another batch is told."""
    narrator = Narrator(instance)
    drift_line = (
        "[2026-01-12] drift verdict: DRIFT (50% of columns drifted, alert at 50%): x1, x2; "
        "the drift sensor boosts this batch's review"
    )
    dg.materialize([drift_report], instance=instance, partition_key="2026-01-12")
    assert narrator.poll() == [drift_line]
    dg.materialize([drift_report], instance=instance, partition_key="2026-01-12")
    assert narrator.poll() == []
    dg.materialize([drift_report], instance=instance, partition_key="2026-01-19")
    assert narrator.poll() == [drift_line.replace("2026-01-12", "2026-01-19")]


# --- silencing -------------------------------------------------------------------------
@pytest.fixture
def restored_loggers() -> Iterator[None]:
    names = {name for name, _ in THIRD_PARTY_NOTICES}
    before = {name: list(logging.getLogger(name).filters) for name in names}
    with warnings.catch_warnings():
        yield
    for name, filters in before.items():
        logging.getLogger(name).filters = filters


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.usefixtures("restored_loggers")
@pytest.mark.parametrize(("logger_name", "prefix"), THIRD_PARTY_NOTICES)
def test_notices_silenced_others_kept(logger_name: str, prefix: str) -> None:
    quiet_third_party()
    quiet_third_party()  # twice: still one filter
    logger = logging.getLogger(logger_name)
    capture = _Capture()
    logger.addHandler(capture)
    previous_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        logger.warning(prefix + " and the rest of the notice")
        logger.warning("the tracking server is not reachable")
    finally:
        logger.removeHandler(capture)
        logger.setLevel(previous_level)
    assert capture.messages == ["the tracking server is not reachable"]
    assert len(logger.filters) == len(set(map(type, logger.filters)))


@pytest.mark.usefixtures("restored_loggers")
def test_dagster_preview_and_beta_warnings_silenced_others_shown() -> None:
    quiet_third_party()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_third_party()  # after simplefilter, as run_demo does it once at start
        warnings.warn("x is currently in preview", dg.PreviewWarning, stacklevel=1)
        warnings.warn("y is currently in beta", dg.BetaWarning, stacklevel=1)
        warnings.warn("z is superseded", dg.SupersessionWarning, stacklevel=1)
        warnings.warn("something else", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["z is superseded", "something else"]


# --- waiting for a UI ------------------------------------------------------------------
class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ui_answering(server: str) -> None:
    assert wait_until_answering(f"{server}/health", what="UI", timeout_s=10)


def test_ui_answering_but_not_200_times_out(server: str) -> None:
    assert not wait_until_answering(f"{server}/missing", what="UI", timeout_s=0.5, every_s=0.1)


def test_ui_whose_process_stopped_is_not_waited_for() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/health"
    assert not wait_until_answering(url, what="UI", timeout_s=600, alive=lambda: False)
