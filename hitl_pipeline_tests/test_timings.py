"""``hitl-pipeline timings`` on a real Dagster instance with real runs in it."""

import json
import os
import subprocess
import sys
import time

import dagster as dg
import pytest

from hitl_pipeline.demo.runner import use_home
from hitl_pipeline.settings import Settings
from hitl_pipeline.timings import recent_breakdowns


@dg.asset
def slow_source() -> int:
    time.sleep(0.3)
    return 1


@dg.asset
def slow_sink(slow_source: int) -> int:
    time.sleep(0.2)
    return slow_source + 1


def test_timings_split_real_runs(tmp_path, monkeypatch):
    settings = Settings.from_env({"HITL_HOME": str(tmp_path / "home")})
    monkeypatch.setenv("HITL_HOME", str(settings.home))
    monkeypatch.setenv("DAGSTER_HOME", str(settings.dagster_home))
    use_home(settings)
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        for _ in range(2):
            assert dg.materialize([slow_source, slow_sink], instance=instance).success
        runs = recent_breakdowns(instance)
    assert len(runs) == 2
    for run in runs:
        # both steps' sleeps are inside the steps' share, and the parts add up
        assert run.steps >= 0.5
        assert run.total >= run.steps
        parts = run.queued + run.startup + run.steps + run.orchestration
        assert parts == pytest.approx(run.total)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HITL_", "DAGSTER_"))}
    env["HITL_HOME"] = str(settings.home)
    out = subprocess.run(
        [sys.executable, "-m", "hitl_pipeline.cli", "timings", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    parsed = json.loads(out)
    (job,) = parsed["jobs"]
    assert job["runs"] == 2 and job["steps"] >= 0.5
    assert {r["run_id"] for r in parsed["runs"]} == {r.run_id for r in runs}
    table = subprocess.run(
        [sys.executable, "-m", "hitl_pipeline.cli", "timings"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "medians over the last 2 finished runs" in table and job["job"] in table
