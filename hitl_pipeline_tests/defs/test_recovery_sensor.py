"""The recovery sensor: one tick runs the doctor and says in its skip reason what it fixed.

Real stores in tmp_path: a git + DVC dataset repository whose data file was overwritten
after its commit, and an MLflow SQLite path that does not exist yet (the tick must not
create it).
"""

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from hitl_pipeline.defs.automation import recovery_sensor
from hitl_pipeline.resources.dvc_store import DvcDatasetStore
from hitl_pipeline.resources.mlflow_registry import MlflowRegistryResource

pytestmark = pytest.mark.faults


def test_a_tick_restores_a_stray_dataset_file_and_then_finds_nothing(tmp_path: Path) -> None:
    store = DvcDatasetStore(repo_path=str(tmp_path / "ds"), remote_url=str(tmp_path / "remote"))
    first = store.commit(frames={"training": pd.DataFrame({"item_id": ["a"]})}, message="v1")
    data = tmp_path / "ds" / first.path
    data.write_bytes(b"half-written")
    registry = MlflowRegistryResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow' / 'db'}")
    instance = dg.DagsterInstance.ephemeral()

    def tick() -> str:
        context = dg.build_sensor_context(
            instance=instance, resources={"registry": registry, "dataset_store": store}
        )
        result = recovery_sensor.evaluate_tick(context)
        assert not result.run_requests
        return result.skip_message or ""

    message = tick()

    assert message.startswith("recovery: 1 dvc fix")
    assert "[dvc] data/training.parquet: restored to the committed version" in message
    assert store.load(version_id=first.version_id).equals(pd.read_parquet(data))
    assert not (tmp_path / "mlflow").exists()  # checking created no MLflow store
    assert tick() == "recovery: nothing to fix"
