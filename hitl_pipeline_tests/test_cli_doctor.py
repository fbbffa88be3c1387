"""``hitl-pipeline doctor`` on a loop's home in tmp_path: each fix printed, exit status 0.

The command runs in its own process, as a person runs it (in-process, DVC would bind its
log handler to pytest's captured output, which later tests then find closed).

Real stores: the home's git + DVC dataset repository (a data file overwritten after its
commit) and its Dagster instance; no MLflow store exists yet, and none is created.
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from hitl_pipeline.resources.dvc_store import DvcDatasetStore
from hitl_pipeline.settings import Settings

pytestmark = pytest.mark.faults


def _doctor() -> tuple[int, str]:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("hitl-pipeline")), "doctor"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.returncode, done.stdout


def test_doctor_prints_each_fix_then_finds_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings.from_env({"HITL_HOME": str(tmp_path)})
    monkeypatch.setenv("HITL_HOME", str(settings.home))
    monkeypatch.setenv("DAGSTER_HOME", str(settings.dagster_home))  # restored after use_home
    for key in ("HITL_MLFLOW_TRACKING_URI", "HITL_DVC_REMOTE"):
        monkeypatch.delenv(key, raising=False)
    store = DvcDatasetStore(repo_path=str(settings.dataset_repo), remote_url=settings.dvc_remote)
    first = store.commit(frames={"training": pd.DataFrame({"item_id": ["a", "b"]})}, message="1")
    data = settings.dataset_repo / first.path
    data.unlink()

    status, out = _doctor()
    assert status == 0, out

    assert "[dvc] data/training.parquet: restored to the committed version" in out
    assert "(missing in the workspace" in out
    assert out.rstrip().endswith("doctor: 1 dvc fix")
    assert hashlib.md5(data.read_bytes()).hexdigest() == first.md5
    assert not (tmp_path / "mlflow").exists()
    assert _doctor() == (0, "doctor: nothing to fix\n")
