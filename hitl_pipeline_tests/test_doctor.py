"""Recovery after kills, against the real stores: each orphan is made by a real kill.

A Dagster run is started in a child process on a Dagster instance in tmp_path and killed
with SIGKILL mid-step; MLflow runs and model versions live in a SQLite store in tmp_path;
dataset commits are killed at their fault points (``HITL_FAULT``) in a child process.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import mlflow
import pandas as pd
import pytest

from hitl_pipeline.core.recovery import DAGSTER, DVC, GIT, MLFLOW, REGISTRY
from hitl_pipeline.doctor import doctor, process_alive
from hitl_pipeline.faults import KILL_EXIT_STATUS
from hitl_pipeline.resources.dvc_store import DvcDatasetStore
from hitl_pipeline.resources.mlflow_registry import (
    TAG_DAGSTER_RUN_ID,
    TAG_GATE_ABANDONED,
    TAG_GATE_PROMOTE,
    TAG_GATE_REASONS,
    TAG_RECOVERED,
    MlflowRegistryResource,
)

pytestmark = pytest.mark.faults

# A one-op job run in a child process on the instance under DAGSTER_HOME: the op says
# which run it is in, then waits for a line on stdin that never comes. The test reads
# the run id (so the run is STARTED and mid-step), then kills the process.
_STUCK_RUN = textwrap.dedent(
    """
    import sys

    import dagster as dg

    @dg.op
    def wait_for_the_parent(context):
        print(context.run_id, flush=True)
        sys.stdin.readline()

    @dg.job
    def stuck_job():
        wait_for_the_parent()

    stuck_job.execute_in_process(instance=dg.DagsterInstance.get())
    """
)


@dataclass
class StuckRun:
    """A real Dagster run, mid-step in a child process."""

    run_id: str
    process: subprocess.Popen[str]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=60)


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        yield instance


@pytest.fixture
def stuck_run(tmp_path: Path, instance: dg.DagsterInstance) -> Iterator[StuckRun]:
    stderr = (tmp_path / "child.err").open("w", encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-c", _STUCK_RUN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, "DAGSTER_HOME": os.environ["DAGSTER_HOME"]},
    )
    try:
        assert process.stdout is not None
        run_id = process.stdout.readline().strip()  # blocks until the op runs
        assert run_id, (tmp_path / "child.err").read_text(encoding="utf-8")[-3000:]
        yield StuckRun(run_id=run_id, process=process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=60)
        stderr.close()


@pytest.fixture
def registry(tmp_path: Path) -> MlflowRegistryResource:
    return MlflowRegistryResource(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_location=str(tmp_path / "mlartifacts"),
        model_name="doctor-test",
    )


def _client(registry: MlflowRegistryResource) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=registry.tracking_uri)


def _run(registry: MlflowRegistryResource, dagster_run_id: str | None) -> str:
    """An MLflow run left RUNNING, as a training step killed mid-way leaves it."""
    tags = {TAG_DAGSTER_RUN_ID: dagster_run_id} if dagster_run_id else {}
    experiment_id = registry._experiment_id()
    return _client(registry).create_run(experiment_id, tags=tags).info.run_id


def _version(registry: MlflowRegistryResource, run_id: str, dagster_run_id: str) -> str:
    """A registered version without a gate decision, as a kill before the gate leaves it."""
    client = _client(registry)
    if not client.search_registered_models(f"name = '{registry.model_name}'"):
        client.create_registered_model(registry.model_name)
    version = client.create_model_version(
        registry.model_name,
        source=f"runs:/{run_id}/model",
        run_id=run_id,
        tags={TAG_DAGSTER_RUN_ID: dagster_run_id},
    )
    return str(version.version)


def test_killed_run_orphans_are_fixed_and_live_ones_left_alone(
    instance: dg.DagsterInstance,
    stuck_run: StuckRun,
    registry: MlflowRegistryResource,
) -> None:
    client = _client(registry)
    live_run = _run(registry, stuck_run.run_id)
    decided_run = _run(registry, stuck_run.run_id)
    unknown_run = _run(registry, "0000-no-such-dagster-run")
    untagged_run = _run(registry, None)
    undecided = _version(registry, live_run, stuck_run.run_id)
    decided = _version(registry, decided_run, stuck_run.run_id)
    # the gate's verdict reached the run, the kill came before the version's tags
    client.set_tag(decided_run, TAG_GATE_PROMOTE, "false")
    client.set_tag(decided_run, TAG_GATE_REASONS, "worse than the champion")

    while_alive = doctor(instance, registry=registry)

    assert while_alive.ok, while_alive.errors
    # only the run whose Dagster run the instance never knew is an orphan yet
    assert [(f.store, f.object.split()[1]) for f in while_alive.fixes] == [(MLFLOW, unknown_run)]
    assert instance.get_run_by_id(stuck_run.run_id).status == dg.DagsterRunStatus.STARTED
    assert client.get_run(live_run).info.status == "RUNNING"
    assert client.get_run(untagged_run).info.status == "RUNNING"
    assert TAG_GATE_ABANDONED not in client.get_model_version(registry.model_name, undecided).tags

    stuck_run.kill()
    after_kill = doctor(instance, registry=registry)

    assert after_kill.ok, after_kill.errors
    assert sorted(f.store for f in after_kill.fixes) == sorted(
        [DAGSTER, MLFLOW, MLFLOW, REGISTRY, REGISTRY]
    )
    assert after_kill.fixes[0].store == DAGSTER  # judged first: the others follow from it
    dead = instance.get_run_by_id(stuck_run.run_id)
    assert dead.status == dg.DagsterRunStatus.FAILURE
    for run_id in (live_run, decided_run):
        info = client.get_run(run_id)
        assert info.info.status == "FAILED"
        assert stuck_run.run_id in info.data.tags[TAG_RECOVERED]
    assert client.get_run(untagged_run).info.status == "RUNNING"  # nothing says whose it is
    abandoned = client.get_model_version(registry.model_name, undecided).tags
    assert TAG_GATE_PROMOTE not in abandoned
    assert "FAILURE" in abandoned[TAG_GATE_ABANDONED]
    copied = client.get_model_version(registry.model_name, decided).tags
    assert copied[TAG_GATE_PROMOTE] == "false"
    assert copied[TAG_GATE_REASONS] == "worse than the champion"
    assert TAG_GATE_ABANDONED not in copied

    again = doctor(instance, registry=registry)
    assert again.fixes == () and again.summary() == "nothing to fix"


def test_a_dead_run_is_failed_even_without_a_registry(
    instance: dg.DagsterInstance, stuck_run: StuckRun
) -> None:
    stuck_run.kill()

    report = doctor(instance)

    assert [(f.store, f.action) for f in report.fixes] == [(DAGSTER, "marked failed")]
    assert str(stuck_run.process.pid) in report.fixes[0].reason
    assert instance.get_run_by_id(stuck_run.run_id).status == dg.DagsterRunStatus.FAILURE
    failure = instance.all_logs(stuck_run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert "hitl-pipeline doctor" in (failure[0].dagster_event.message or "")


def test_process_alive_tells_live_reused_zombie_and_reaped_processes_apart() -> None:
    now = time.time()
    assert process_alive(os.getpid(), now)
    # a process started after the event cannot have written it: the pid was reused
    assert not process_alive(os.getpid(), 0.0)

    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.readline()"], stdin=subprocess.PIPE
    )
    assert process_alive(child.pid, time.time())
    child.kill()
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # dead, not yet reaped
    assert not process_alive(child.pid, now)  # a zombie
    child.wait()
    assert not process_alive(child.pid, now)


# --- the dataset repository ------------------------------------------------------------
_KILLED_COMMIT = textwrap.dedent(
    """
    import sys

    import pandas as pd

    from hitl_pipeline.resources.dvc_store import DvcDatasetStore

    store = DvcDatasetStore(repo_path=sys.argv[1], remote_url=sys.argv[2])
    frame = pd.DataFrame({"item_id": [f"i{n}" for n in range(50)], "x": range(50)})
    store.commit(frames={"training": frame}, message="killed on the way")
    """
)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _dvc_status(repo: Path) -> dict:
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        return dvc_repo.status()


def _git_status(repo: Path) -> str:
    return subprocess.run(
        ["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.parametrize(
    ("point", "dvc_dirty", "git_dirty", "stores"),
    [
        # data file written, not yet added: git is clean, only `dvc status` sees it
        ("dataset.files_written", True, False, [DVC]),
        # added to DVC, not committed: the .dvc file is reset, then the data follows it
        ("dataset.dvc_added", False, True, [GIT, DVC]),
    ],
)
def test_a_commit_killed_during_the_dvc_write_is_restored(
    tmp_path: Path, point: str, dvc_dirty: bool, git_dirty: bool, stores: list[str]
) -> None:
    repo, remote = tmp_path / "datasets", tmp_path / "remote"
    store = DvcDatasetStore(repo_path=str(repo), remote_url=str(remote))
    first = store.commit(
        frames={"training": pd.DataFrame({"item_id": ["a", "b"], "x": [1, 2]})}, message="v1"
    )

    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_COMMIT, str(repo), str(remote)],
        env={**os.environ, "HITL_FAULT": f"{point}:kill"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert killed.returncode == KILL_EXIT_STATUS, killed.stderr[-3000:]
    data = repo / "data" / "training.parquet"
    assert _md5(data) != first.md5
    assert bool(_dvc_status(repo)) is dvc_dirty  # modified outputs
    assert bool(_git_status(repo)) is git_dirty  # a modified .dvc file

    report = doctor(dg.DagsterInstance.ephemeral(), dataset_store=store)

    assert report.ok, report.errors
    assert [f.store for f in report.fixes] == stores
    assert report.fixes[-1].object == "data/training.parquet"
    assert "modified" in report.fixes[-1].reason
    assert _dvc_status(repo) == {}
    assert _git_status(repo) == ""
    assert _md5(data) == first.md5
    assert store.latest() == first
    assert doctor(dg.DagsterInstance.ephemeral(), dataset_store=store).fixes == ()
