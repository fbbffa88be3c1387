"""The loop's jobs on Dagster's Celery executor, with two real workers, and on the
multiprocess executor.

Real parts: RabbitMQ (127.0.0.1:5672) as the broker, two ``celery worker`` processes
started here, a Dagster instance and MLflow in PostgreSQL, the session's Label Studio,
DVC. The runs are started by the ``dagster job execute`` CLI (the run's orchestrator),
which sends every step to the workers through the broker; the event log says where each
step ran.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator

import dagster as dg
import pytest

from hitl_pipeline.core.types import ITEM_ID
from hitl_pipeline.demo.runner import land_batch, partition_for
from hitl_pipeline.demo.stream import DriftingStream
from hitl_pipeline_tests.scale.conftest import (
    BIN,
    CELERY_BACKEND,
    ROOT,
    LoopHome,
    label_studio_tasks,
    make_loop_home,
    wait_until,
)

pytestmark = [pytest.mark.celery, pytest.mark.postgres, pytest.mark.labelstudio]
ROWS = 60
WORKERS = 2
CELERY_WORKER_KEY = "Celery worker"  # dagster_celery's engine event names the worker so


@pytest.fixture
def celery_loop(
    celery_broker, postgres_deployment, tmp_path, label_studio
) -> Iterator[tuple[LoopHome, dict[str, int]]]:
    """A loop on the Celery executor and its two workers (name -> PID), stopped after."""
    queue = f"hitl-test-{uuid.uuid4().hex[:8]}"  # other loops on the broker never see it
    loop = make_loop_home(
        tmp_path / "home",
        postgres_deployment,
        label_studio=label_studio,
        executor="celery",
        rows_per_batch=ROWS,
        project=f"t celery {uuid.uuid4().hex[:8]}",
        extra_env={
            "HITL_CELERY_BROKER": celery_broker,
            "HITL_CELERY_BACKEND": CELERY_BACKEND,
            "HITL_CELERY_QUEUE": queue,
        },
    )
    # what `dagster-celery worker start -y` writes: the worker app's broker and backend
    config_dir = loop.settings.home / "celery"
    config_dir.mkdir()
    (config_dir / "dagster_celery_config.py").write_text(
        f"broker_url = {celery_broker!r}\nresult_backend = {CELERY_BACKEND!r}\n", encoding="utf-8"
    )
    loop.env["PYTHONPATH"] = f"{config_dir}:{loop.env['PYTHONPATH']}"
    workers: dict[str, int] = {}
    try:
        for index in range(1, WORKERS + 1):
            name = f"hitl-w{index}-{queue}"
            process = loop.spawn(
                [
                    str(BIN / "celery"),
                    "-A",
                    "dagster_celery.app",
                    "worker",
                    # one step at a time, in the worker process itself: its PID is the
                    # step's PID in the event log
                    "--pool=solo",
                    "--prefetch-multiplier=1",
                    "-Q",
                    queue,
                    "-n",
                    f"{name}@%h",
                    "--loglevel=INFO",
                    "--without-gossip",
                    "--without-mingle",
                ],
                log_name=name,
            )
            workers[name] = process.pid
        for name in workers:
            wait_until(
                lambda name=name: " ready." in loop.log_tail(name, 100_000),
                timeout_s=180,
                what=f"Celery worker {name} to be ready; its log:\n{loop.log_tail(name)}",
            )
        yield loop, workers
    finally:
        for process in loop.processes:
            loop.stop(process)
        assert all(p.poll() is not None for p in loop.processes), "a worker survived its stop"


def execute(loop: LoopHome, job: str, *, tags: dict[str, str], executor: str) -> str:
    """Run ``job`` with ``dagster job execute`` (the orchestrator); returns its run id."""
    run_id_before = _run_ids(loop)
    started = time.monotonic()
    result = subprocess.run(
        [
            str(BIN / "dagster"),
            "job",
            "execute",
            "-m",
            "hitl_pipeline.definitions",
            "-j",
            job,
            "--tags",
            json.dumps(tags),
        ],
        cwd=ROOT,
        env={**loop.env, "HITL_EXECUTOR": executor},
        capture_output=True,
        text=True,
        timeout=900,
    )
    (new,) = _run_ids(loop) - run_id_before
    with dg.DagsterInstance.from_config(str(loop.settings.dagster_home)) as instance:
        run = instance.get_run_by_id(new)
        assert run is not None
        assert run.status == dg.DagsterRunStatus.SUCCESS, (
            f"{job} on {executor} ended {run.status} after {time.monotonic() - started:.0f} s:\n"
            + result.stdout[-3000:]
            + result.stderr[-3000:]
        )
    return new


def execute_together(loop: LoopHome, partitions: list[str], *, executor: str) -> set[str]:
    """Score several batches at once, one ``dagster job execute`` each; their run ids."""
    before = _run_ids(loop)
    processes = [
        loop.spawn(
            [
                str(BIN / "dagster"),
                "job",
                "execute",
                "-m",
                "hitl_pipeline.definitions",
                "-j",
                "score_batch_job",
                "--tags",
                json.dumps({"dagster/partition": partition, "hitl/trigger": "new_batch"}),
            ],
            log_name=f"execute-{partition}",
        )
        for partition in partitions
    ]
    for process in processes:
        process.wait(timeout=900)
    new = _run_ids(loop) - before
    with dg.DagsterInstance.from_config(str(loop.settings.dagster_home)) as instance:
        for run_id in new:
            run = instance.get_run_by_id(run_id)
            assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS, "\n".join(
                loop.log_tail(f"execute-{p}") for p in partitions
            )
    assert len(new) == len(partitions)
    return new


def step_spans(loop: LoopHome, run_ids: set[str], step: str) -> list[tuple[float, float]]:
    """(start, end) of ``step`` in each run, from its STEP_START and STEP_SUCCESS."""
    spans = []
    with dg.DagsterInstance.from_config(str(loop.settings.dagster_home)) as instance:
        for run_id in run_ids:
            times = {
                entry.dagster_event.event_type_value: entry.timestamp
                for entry in instance.all_logs(run_id)
                if entry.dagster_event and entry.dagster_event.step_key == step
            }
            spans.append((times["STEP_START"], times["STEP_SUCCESS"]))
    return spans


def _run_ids(loop: LoopHome) -> set[str]:
    with dg.DagsterInstance.from_config(str(loop.settings.dagster_home)) as instance:
        return {r.run_id for r in instance.get_runs()}


def step_places(loop: LoopHome, run_id: str) -> tuple[dict[str, int], dict[str, str], int]:
    """Per step: the PID of its STEP_START, the Celery worker that took it; the run's PID
    (its RUN_START)."""
    pids: dict[str, int] = {}
    workers: dict[str, str] = {}
    run_pid = -1
    with dg.DagsterInstance.from_config(str(loop.settings.dagster_home)) as instance:
        for entry in instance.all_logs(run_id):
            event = entry.dagster_event
            if event is None:
                continue
            if event.event_type_value == "RUN_START":
                run_pid = event.pid
            elif event.event_type_value == "STEP_START" and event.step_key:
                pids[event.step_key] = event.pid
            elif event.event_type_value == "ENGINE_EVENT" and event.step_key:
                metadata = getattr(event.event_specific_data, "metadata", None) or {}
                if CELERY_WORKER_KEY in metadata:
                    workers[event.step_key] = str(metadata[CELERY_WORKER_KEY].value)
    return pids, workers, run_pid


def test_jobs_run_on_two_celery_workers_and_on_the_multiprocess_executor(celery_loop):
    loop, workers = celery_loop
    stream = DriftingStream(rows_per_batch=ROWS, drift_at_batch=10_000)

    # the first champion, trained by retrain_job through Celery; then a batch scored
    bootstrap = execute(loop, "retrain_job", tags={"hitl/trigger": "bootstrap"}, executor="celery")
    land_batch(loop.settings, stream, 1)
    scored = execute(
        loop,
        "score_batch_job",
        tags={"dagster/partition": partition_for(1, stream), "hitl/trigger": "new_batch"},
        executor="celery",
    )
    taken_by: set[str] = set()
    for run_id in (bootstrap, scored):
        pids, by_worker, run_pid = step_places(loop, run_id)
        assert len(pids) >= 5, pids
        # every step ran in one of our worker processes, none in the orchestrator
        assert set(pids.values()) <= set(workers.values()), (pids, workers)
        assert run_pid not in pids.values()
        assert set(by_worker) == set(pids)
        assert {name.split("@")[0] for name in by_worker.values()} <= set(workers)
        # the worker the engine event names is the process that started the step
        pid_of = {name.split("@")[0]: pid for name, pid in workers.items()}
        assert all(pid_of[by_worker[step].split("@")[0]] == pid for step, pid in pids.items())
        taken_by |= {name.split("@")[0] for name in by_worker.values()}
    assert taken_by == set(workers), f"only {taken_by} took steps"

    # two batches scored at once through the workers: the runs overlap, their Label
    # Studio pushes (pool label_studio_tasks) do not
    land_batch(loop.settings, stream, 3)
    land_batch(loop.settings, stream, 4)
    pair = execute_together(
        loop, [partition_for(3, stream), partition_for(4, stream)], executor="celery"
    )
    with dg.DagsterInstance.from_config(str(loop.settings.dagster_home)) as instance:
        records = [instance.get_run_record_by_id(run_id) for run_id in pair]
    (a_start, a_end), (b_start, b_end) = [(r.start_time, r.end_time) for r in records if r]
    assert a_start < b_end and b_start < a_end, "the two runs did not overlap"
    (a, b) = sorted(step_spans(loop, pair, "labeling_tasks"))
    assert a[1] <= b[0], f"labeling_tasks of the two runs overlapped: {a} {b}"

    # the same definitions on the multiprocess executor: one process per step
    land_batch(loop.settings, stream, 2)
    multi = execute(
        loop,
        "score_batch_job",
        tags={"dagster/partition": partition_for(2, stream), "hitl/trigger": "new_batch"},
        executor="multiprocess",
    )
    pids, by_worker, run_pid = step_places(loop, multi)
    assert len(pids) >= 5 and not by_worker
    assert len(set(pids.values())) == len(pids) and run_pid not in pids.values()
    assert not set(pids.values()) & set(workers.values())

    # every scored batch reached Label Studio, each item once
    tasks = label_studio_tasks(
        loop.env["HITL_LABEL_STUDIO_URL"],
        loop.env["HITL_LABEL_STUDIO_API_KEY"],
        loop.settings.label_studio_project,
    )
    for tier, queue in tasks.items():
        items = [task.data[ITEM_ID] for task in queue]
        assert len(items) == len(set(items)), f"duplicate tasks in {tier}"
    assert {
        item[:4] for queue in tasks.values() for task in queue for item in [task.data[ITEM_ID]]
    } == {"b001", "b002", "b003", "b004"}
