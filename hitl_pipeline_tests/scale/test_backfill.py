"""A 30-partition backfill with parallel runs loses nothing and doubles nothing.

Real parts: a Dagster instance in PostgreSQL with a QueuedRunCoordinator (three runs at a
time) and a ``dagster-daemon`` started here, Dagster's backfill (``dagster job backfill``)
over 30 daily batches of ``score_batch_job``, MLflow in PostgreSQL, the session's Label
Studio with simulated reviewers answering through its API, the label pull and the DVC
dataset version of ``retrain_job``. The runs execute in process each
(``HITL_EXECUTOR=in_process``): the parallelism under test is between runs, and the
concurrency pools hold across runs whatever the executor.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections import defaultdict
from datetime import timedelta

import dagster as dg
import pytest

from hitl_pipeline.core.tiers import TIER_ADJUDICATION
from hitl_pipeline.core.types import ITEM_ID
from hitl_pipeline.defs.pools import LABEL_STUDIO_POOL, POOLS
from hitl_pipeline.demo.reviewers import ReviewerPool, SimulatedReviewer
from hitl_pipeline.demo.runner import land_batch, partition_for, read_truth
from hitl_pipeline.demo.stream import DriftingStream
from hitl_pipeline.resources.local_store import LocalStore
from hitl_pipeline_tests.scale.conftest import (
    BIN,
    ROOT,
    LoopHome,
    label_studio_tasks,
    make_loop_home,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.labelstudio, pytest.mark.slow]
PARTITIONS = 30
ROWS = 40
MAX_CONCURRENT_RUNS = 3
ANSWERS_PER_PROJECT = 120  # enough to cross the pull's pages, few enough for CI


def _instance(loop: LoopHome) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(loop.settings.dagster_home))


def _dagster(loop: LoopHome, *args: str, timeout_s: float = 900, check: bool = True) -> str:
    result = subprocess.run(
        [str(BIN / "dagster"), *args],
        cwd=ROOT,
        env=loop.env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if check:
        assert result.returncode == 0, f"dagster {' '.join(args)}:\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr


def _pool_of_step(loop: LoopHome) -> dict[str, str]:
    """step key -> pool, for the steps of the project's jobs that are in a pool."""
    import hitl_pipeline.definitions as project

    repository = project.defs().get_repository_def()
    pools: dict[str, str] = {}
    for job in repository.get_all_jobs():
        for node in job.graph.nodes:
            pool = getattr(node.definition, "pool", None)
            if pool:
                pools[node.name] = pool
    return pools


def _step_intervals(
    instance: dg.DagsterInstance, run_ids: list[str]
) -> list[tuple[str, str, float, float]]:
    """(run id, step key, start, end) of every finished step of the runs."""
    intervals = []
    for run_id in run_ids:
        started: dict[str, float] = {}
        for entry in instance.all_logs(run_id):
            event = entry.dagster_event
            if event is None or not event.step_key:
                continue
            if event.event_type_value == "STEP_START":
                started[event.step_key] = entry.timestamp
            elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
                begin = started.get(event.step_key)
                if begin is not None:
                    intervals.append((run_id, event.step_key, begin, entry.timestamp))
    return intervals


def _id(annotation: object) -> int:
    """An annotation's id, whether the SDK gives a dict or an object."""
    if isinstance(annotation, dict):
        return int(annotation["id"])
    return int(annotation.id)  # type: ignore[attr-defined]


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    open_now = most = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        open_now += step
        most = max(most, open_now)
    return most


def test_a_30_partition_backfill_in_parallel_runs_loses_and_doubles_nothing(
    tmp_path, postgres_deployment, label_studio
):
    project = f"t backfill {uuid.uuid4().hex[:8]}"
    loop = make_loop_home(
        tmp_path / "home",
        postgres_deployment,
        label_studio=label_studio,
        executor="in_process",
        rows_per_batch=ROWS,
        project=project,
    )
    loop.configure_instance(concurrency={"runs": {"max_concurrent_runs": MAX_CONCURRENT_RUNS}})
    workspace = loop.settings.home / "workspace.yaml"
    workspace.write_text(
        "load_from:\n"
        "  - python_module:\n"
        "      module_name: hitl_pipeline_tests.scale.backfill_location\n"
        "      location_name: hitl_backfill\n"
        f"      working_directory: {ROOT}\n",
        encoding="utf-8",
    )
    timings: dict[str, float] = {}
    t0 = time.monotonic()

    # the first champion, then 30 daily batches in the landing folder
    _dagster(loop, "job", "execute", "-m", "hitl_pipeline.definitions", "-j", "retrain_job")
    timings["bootstrap"] = time.monotonic() - t0
    stream = DriftingStream(rows_per_batch=ROWS, drift_at_batch=10_000, period=timedelta(days=1))
    partitions = [partition_for(day, stream) for day in range(1, PARTITIONS + 1)]
    for day in range(1, PARTITIONS + 1):
        land_batch(loop.settings, stream, day)

    daemon = loop.spawn(
        [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], log_name="dagster-daemon"
    )
    try:
        t1 = time.monotonic()
        _dagster(
            loop,
            "job",
            "backfill",
            "-w",
            str(workspace),
            "-j",
            "score_batch_job",
            "--from",
            partitions[0],
            "--to",
            partitions[-1],
            "--tags",
            json.dumps({"hitl/trigger": "backfill"}),
            "--noprompt",
        )
        with _instance(loop) as instance:
            backfill_runs = dg.RunsFilter(job_name="score_batch_job")

            def finished() -> list[dg.RunRecord] | None:
                records = instance.get_run_records(filters=backfill_runs)
                done = [r for r in records if r.dagster_run.is_finished]
                return records if len(records) == PARTITIONS == len(done) else None

            records = wait_until(
                finished,
                # ~20 min of runs is a loaded machine's; CI's lighter one takes about 6
                timeout_s=1500,
                every_s=3,
                what=f"{PARTITIONS} backfill runs to finish; daemon log:\n"
                + loop.log_tail("dagster-daemon"),
            )
        timings["backfill"] = time.monotonic() - t1
    finally:
        loop.stop(daemon)
    assert daemon.poll() is not None

    # every partition ran once, as part of one backfill, and succeeded
    runs = [r.dagster_run for r in records]
    assert sorted(r.tags["dagster/partition"] for r in runs) == partitions
    assert len({r.tags.get("dagster/backfill") for r in runs}) == 1
    failed = [r.run_id for r in runs if r.status != dg.DagsterRunStatus.SUCCESS]
    assert not failed, f"runs not successful: {failed}"
    # ... in parallel: runs overlapped in time, never more than the queue allows
    spans = [(r.start_time, r.end_time) for r in records]
    assert all(start and end for start, end in spans)
    concurrent = _max_overlap(spans)
    assert 2 <= concurrent <= MAX_CONCURRENT_RUNS, concurrent

    # people answer part of the queue; the pull and the dataset version follow
    t2 = time.monotonic()
    pool = ReviewerPool(
        url=label_studio.url,
        api_key=label_studio.token,
        reviewers=[
            SimulatedReviewer(email="ada@backfill.hitl.local", error_rate=0.05, seed=1),
            SimulatedReviewer(email="grace@backfill.hitl.local", error_rate=0.1, seed=2),
        ],
        project_title=project,
        overlap=0.1,
        data_dir=label_studio.data_dir,
    )
    submitted = pool.answer_open_tasks(truth=read_truth(loop.settings), limit=ANSWERS_PER_PROJECT)
    timings["review"] = time.monotonic() - t2
    assert submitted > 0
    t3 = time.monotonic()
    # the gate may keep the champion (a failed blocking check fails the run): what matters
    # here is that the labels were pulled and the dataset versioned
    output = _dagster(
        loop,
        "job",
        "execute",
        "-m",
        "hitl_pipeline.definitions",
        "-j",
        "retrain_job",
        "--tags",
        json.dumps({"hitl/trigger": "after_backfill"}),
        check=False,
    )
    timings["retrain"] = time.monotonic() - t3
    with _instance(loop) as instance:
        (retrain,) = instance.get_run_records(
            filters=dg.RunsFilter(tags={"hitl/trigger": "after_backfill"})
        )
        done = {step for _, step, _, _ in _step_intervals(instance, [retrain.dagster_run.run_id])}
        succeeded = {
            entry.dagster_event.step_key
            for entry in instance.all_logs(retrain.dagster_run.run_id)
            if entry.dagster_event and entry.dagster_event.event_type_value == "STEP_SUCCESS"
        }
    assert {"human_labels", "adjudication_tasks", "training_dataset"} <= succeeded, (
        f"steps done: {sorted(done)}\n{output[-4000:]}"
    )

    # no duplicate task: each item once per project; a routed item in one tier only
    tasks = label_studio_tasks(label_studio.url, label_studio.token, project)
    for tier, queue in tasks.items():
        items = [str(task.data[ITEM_ID]) for task in queue]
        assert len(items) == len(set(items)), f"duplicate tasks in the {tier} queue"
    seen: dict[str, str] = {}
    for tier in (t for t in tasks if t != TIER_ADJUDICATION):
        for item in (str(task.data[ITEM_ID]) for task in tasks[tier]):
            assert item not in seen, f"{item} in both the {seen[item]} and the {tier} queue"
            seen[item] = tier
    batches = {item.split("-")[0] for item in seen}
    assert len(batches) == PARTITIONS, "some backfilled batch pushed nothing"
    store = LocalStore(home=str(loop.settings.home))
    pushed = store.read_pushed()
    assert {
        item for tier, items in pushed.items() if tier != TIER_ADJUDICATION for item in items
    } == set(seen)

    # no lost annotation: every answer in Label Studio is in the ledger
    answers = {
        _id(annotation)
        for queue in tasks.values()
        for task in queue
        for annotation in task.annotations or []
    }
    assert len(answers) == submitted
    ledger = store.read_ledger(include_quarantined=True)
    missing = answers - set(ledger["annotation_id"].astype(int))
    assert not missing, f"{len(missing)} annotation(s) not in the ledger: {sorted(missing)[:10]}"

    # a consistent DVC repository: nothing to commit, the cache and the remote in sync
    repo = loop.settings.dataset_repo
    status = subprocess.run(
        [str(BIN / "dvc"), "status"], cwd=repo, capture_output=True, text=True, timeout=300
    )
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout
    remote = subprocess.run(
        [str(BIN / "dvc"), "status", "--cloud"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert remote.returncode == 0 and "in sync" in remote.stdout, remote.stdout
    git = subprocess.run(
        ["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, timeout=60
    )
    assert git.returncode == 0 and git.stdout.strip() == "", git.stdout

    # steps of one pool never overlapped, across all runs; scoring steps did
    with _instance(loop) as instance:
        all_runs = [r.dagster_run.run_id for r in instance.get_run_records()]
        intervals = _step_intervals(instance, all_runs)
    pool_of = _pool_of_step(loop)
    assert LABEL_STUDIO_POOL in pool_of.values() and set(pool_of.values()) <= set(POOLS)
    by_pool: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for _, step, start, end in intervals:
        if step in pool_of:
            by_pool[pool_of[step]].append((start, end))
    assert len(by_pool[LABEL_STUDIO_POOL]) >= PARTITIONS
    for pool_name, spans_in_pool in by_pool.items():
        assert _max_overlap(spans_in_pool) == 1, f"steps of pool {pool_name} overlapped"
    scoring = [(start, end) for _, step, start, end in intervals if step == "predictions"]
    assert _max_overlap(scoring) >= 2, "scoring steps never ran in parallel"
    print(f"backfill timings (s): { {k: round(v, 1) for k, v in timings.items()} }")
