"""Fault suite: stores that are down, unwritable or locked.

Real MLflow on SQLite and a real DVC dataset repository under ``tmp_path``. A store that
cannot be used fails the step before its first write, with a message that names the
store and the variable that points at it; a locked SQLite database is waited for.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from hitl_pipeline.core.schema import save_schema
from hitl_pipeline.defs.resources import build_resources
from hitl_pipeline.defs.s02_inference import predictions
from hitl_pipeline.defs.s07_dataset import training_dataset
from hitl_pipeline.demo.stream import DEMO_SCHEMA, DriftingStream
from hitl_pipeline.resources.dvc_store import DvcDatasetStore
from hitl_pipeline.resources.errors import StoreUnavailable
from hitl_pipeline.resources.mlflow_registry import MlflowRegistryResource
from hitl_pipeline.settings import Settings

pytestmark = pytest.mark.faults

STREAM = DriftingStream(seed_train_rows=300, seed_holdout_rows=200)


def _not_a_folder(tmp_path: Path) -> Path:
    """A path below a regular file: no process, root included, can create it."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder", encoding="utf-8")
    return blocker / "mlflow"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Settings:
    monkeypatch.setenv("HITL_HOME", str(tmp_path / "home"))
    for var in ("HITL_MLFLOW_TRACKING_URI", "HITL_DVC_REMOTE"):
        monkeypatch.delenv(var, raising=False)
    settings = Settings.from_env()
    settings.schema_path.parent.mkdir(parents=True, exist_ok=True)
    save_schema(DEMO_SCHEMA, settings.schema_path)
    settings.seed.mkdir(parents=True)
    train, holdout = STREAM.seed_sets()
    train.to_parquet(settings.seed / "train.parquet")
    holdout.to_parquet(settings.seed / "holdout.parquet")
    return settings


def test_unreachable_tracking_store_is_named_with_its_variable(tmp_path):
    registry = MlflowRegistryResource(
        tracking_uri=f"sqlite:///{_not_a_folder(tmp_path) / 'mlflow.db'}"
    )
    with pytest.raises(StoreUnavailable, match="HITL_MLFLOW_TRACKING_URI") as raised:
        registry.check()
    assert "MLflow tracking store" in str(raised.value)


def test_unwritable_artifact_folder_is_named(tmp_path):
    registry = MlflowRegistryResource(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_location=str(_not_a_folder(tmp_path) / "artifacts"),
    )
    with pytest.raises(StoreUnavailable, match=r"artifact folder .* is not writable"):
        registry.check()


def _dead_registry(resources: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    return {
        **resources,
        "registry": MlflowRegistryResource(
            tracking_uri=f"sqlite:///{_not_a_folder(tmp_path) / 'mlflow.db'}"
        ),
    }


@dg.asset(name="human_labels", group_name="s06_feedback")
def _no_labels_yet() -> pd.DataFrame:
    return pd.DataFrame()


def test_no_dataset_version_is_committed_when_the_registry_is_down(home, tmp_path):
    """The tester's case: the DVC version was committed, then the run failed at MLflow."""
    resources = _dead_registry(build_resources(home), tmp_path)
    before = resources["dataset_store"].list_versions()
    result = dg.materialize(
        [_no_labels_yet, training_dataset],
        resources=resources,
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "HITL_MLFLOW_TRACKING_URI" in failure.event_specific_data.error.message
    assert "MLflow tracking store" in failure.event_specific_data.error.message
    assert resources["dataset_store"].list_versions() == before


def test_scoring_against_a_dead_registry_fails_first_and_named(home, tmp_path):
    """The tester's case: a bare FileNotFoundError at ``predictions``."""
    resources = _dead_registry(build_resources(home), tmp_path)
    batch = STREAM.batch(0).drop(columns=["label"])

    @dg.asset(name="production_batch", partitions_def=predictions.partitions_def)
    def production_batch() -> pd.DataFrame:
        return batch

    partition = predictions.partitions_def.get_first_partition_key()
    result = dg.materialize(
        [production_batch, predictions],
        resources=resources,
        partition_key=partition,
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "predictions"
    message = failure.event_specific_data.error.message
    assert "MLflow tracking store" in message and "HITL_MLFLOW_TRACKING_URI" in message


def test_a_locked_mlflow_database_is_waited_for(tmp_path):
    """Another process holds the SQLite database longer than MLflow's own 20 s busy
    timeout: the registry retries with backoff instead of failing the step."""
    db = tmp_path / "mlflow.db"
    registry = MlflowRegistryResource(tracking_uri=f"sqlite:///{db}")
    registry.check()  # schema and experiment exist
    locked, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        connection = sqlite3.connect(db, isolation_level=None)
        connection.execute("BEGIN EXCLUSIVE")
        locked.set()
        release.wait(timeout=120)
        connection.execute("COMMIT")
        connection.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    assert locked.wait(timeout=30)
    client = registry._client()
    # release the lock only once MLflow gave up at least once (its 20 s busy timeout)
    attempts: list[int] = []
    original = client._wrapped.create_experiment

    def counted(*args: Any, **kwargs: Any) -> str:
        attempts.append(1)
        if len(attempts) == 2:
            release.set()
        return original(*args, **kwargs)

    client._wrapped.create_experiment = counted
    try:
        experiment_id = client.create_experiment("written-after-the-lock")
    finally:
        release.set()
        holder.join(timeout=60)
    assert len(attempts) == 2  # failed once on the lock, then succeeded
    assert client.get_experiment(experiment_id).name == "written-after-the-lock"


def test_an_unwritable_dvc_remote_is_named_before_anything_is_committed(home, tmp_path):
    resources = build_resources(home)
    store = resources["dataset_store"]
    dead = DvcDatasetStore(
        repo_path=store.repo_path, remote_url=str(_not_a_folder(tmp_path) / "remote")
    )
    result = dg.materialize(
        [_no_labels_yet, training_dataset],
        resources={**resources, "dataset_store": dead},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "DVC remote" in failure.event_specific_data.error.message
    assert "HITL_DVC_REMOTE" in failure.event_specific_data.error.message
    assert store.list_versions() == []
