"""Fault suite: a retrain killed (``kill -9`` semantics) at each point where it writes.

The retrain runs in a separate process against a real Dagster instance (DAGSTER_HOME),
real MLflow on SQLite and a real DVC repository; ``HITL_FAULT`` ends that process at a
named point (``hitl_pipeline.faults``): no ``finally`` block or handler runs. Then, as an
operator would: ``doctor`` cleans what the dead run left, and a re-run finishes the job.
Whatever the kill point, the champion never moves to a version its own gate did not pass.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import mlflow
import pytest

from hitl_pipeline.defs.resources import build_resources
from hitl_pipeline.doctor import doctor
from hitl_pipeline.faults import KILL_EXIT_STATUS
from hitl_pipeline.resources.mlflow_registry import TAG_GATE_ABANDONED
from hitl_pipeline.settings import Settings
from hitl_pipeline_tests.faults.retrain import prepare_home, retrain, run_config

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Settings:
    monkeypatch.setenv("HITL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    for var in ("HITL_MLFLOW_TRACKING_URI", "HITL_DVC_REMOTE", "HITL_FAULT"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "dagster").mkdir()
    # pools as the loop's homes have them: a killed step's slot must not block the re-run
    (tmp_path / "dagster" / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n",
        encoding="utf-8",
    )
    return Settings.from_env()


def _killed_retrain(version_id: str, fault: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HITL_FAULT": f"{fault}:kill"}
    return subprocess.run(
        [sys.executable, "-m", "hitl_pipeline_tests.faults.retrain", version_id, "--seed", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _running_mlflow_runs(settings: Settings) -> list[str]:
    client = mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    return [
        run.info.run_id
        for experiment in client.search_experiments()
        for run in client.search_runs([experiment.experiment_id])
        if run.info.status == "RUNNING"
    ]


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("fault", "left_behind"),
    [
        ("training.before_register", set()),  # fitted, nothing written yet
        ("registry.after_log_model", {"mlflow"}),  # run open, no model version
        ("gate.before_decision", {"registry"}),  # version registered, never judged
        ("registry.between_aliases", set()),  # previous-champion moved, champion not
    ],
)
def test_a_killed_retrain_is_cleaned_up_and_a_rerun_finishes(home, fault, left_behind):
    versions = prepare_home(home)
    resources = build_resources(home)
    registry = resources["registry"]
    with dg.DagsterInstance.get() as instance:
        assert retrain(resources, versions["clean"], run_config(0), instance).success
        first = registry.champion()
        assert first is not None

        killed = _killed_retrain(versions["clean"].version_id, fault)
        assert killed.returncode == KILL_EXIT_STATUS, killed.stderr[-2000:]
        assert f"fault injected at {fault}" in killed.stderr
        # the kill moved nothing: the champion is the one before
        assert registry.champion().version == first.version
        stuck = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        assert len(stuck) == 1
        if "mlflow" in left_behind:
            assert _running_mlflow_runs(home)
        unjudged = [v for v in registry.list_versions() if "gate.promote" not in v.tags]
        assert bool(unjudged) == ("registry" in left_behind)

        report = doctor(instance, registry=registry, dataset_store=resources["dataset_store"])
        assert report.ok, report.lines()
        fixed = {fix.store for fix in report.fixes}
        assert "dagster" in fixed and left_behind <= fixed
        assert not instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        assert not _running_mlflow_runs(home)
        for version in registry.list_versions():
            assert "gate.promote" in version.tags or TAG_GATE_ABANDONED in version.tags
        # a second pass finds nothing left to fix
        again = doctor(instance, registry=registry, dataset_store=resources["dataset_store"])
        assert not again.fixes, again.lines()

        rerun = retrain(resources, versions["clean"], run_config(2), instance)
        assert rerun.success
        new = rerun.output_for_node("candidate_model")
        champion = registry.champion()
        assert champion is not None and champion.version == new.version
        assert champion.tags["gate.promote"] == "true"
        assert champion.tags["gate.champion_version"] == first.version
        history = [(e.action, e.version, e.from_version) for e in registry.champion_history()]
        assert history[-1] == ("promote", new.version, first.version)
