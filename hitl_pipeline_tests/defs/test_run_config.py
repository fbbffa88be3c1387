"""The loop's run-config file: read, checked, and given to every run a sensor requests."""

from pathlib import Path

import dagster as dg
import pytest

from hitl_pipeline.defs.automation import (
    DRIFT_REVIEW_CONFIG,
    DRIFT_REVIEW_STEPS,
    RETRAIN_STEPS,
    SCORE_STEPS,
    landing_sensor,
)
from hitl_pipeline.defs.run_config import RunConfigFileError, load_run_config, request_config
from hitl_pipeline.demo.runner import DemoOptions, prepare_home
from hitl_pipeline.demo.stream import policy_run_config
from hitl_pipeline.resources.production import ProductionSource
from hitl_pipeline.settings import Settings

POLICY = {
    "review_queue": {"config": {"review_classes": ["threat"]}},
    "labeling_tasks": {"config": {"expert_classes": ["threat"]}},
}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("ops: [", "is not valid YAML"),
        ("- a list", "one top-level key, ops"),
        ("ops: {}\nresources: {}", "one top-level key, ops"),
        ("ops:\n  review_queue: 3", "each entry under ops must be a mapping"),
    ],
)
def test_a_malformed_file_is_named_with_what_is_wrong(tmp_path, text, problem):
    path = tmp_path / "run_config.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RunConfigFileError, match=problem) as raised:
        load_run_config(path)
    assert str(path) in str(raised.value)


def test_no_file_or_an_empty_one_is_no_config(tmp_path):
    assert load_run_config(tmp_path / "missing.yaml") == {}
    (tmp_path / "empty.yaml").write_text("# nothing yet\n", encoding="utf-8")
    assert load_run_config(tmp_path / "empty.yaml") == {}


@pytest.fixture
def moderation_home(tmp_path) -> Settings:
    """A demo home for the moderation stream: prepare_home writes the policy file."""
    settings = Settings.from_env({"HITL_HOME": str(tmp_path / "home")})
    prepare_home(settings, DemoOptions(stream="moderation", rows_per_batch=50))
    assert load_run_config(settings.run_config_file) == policy_run_config("moderation")
    return settings


@pytest.mark.parametrize(
    ("steps", "job_config", "expected_ops"),
    [
        # a job gets the sections of its own steps, and only those
        (SCORE_STEPS, None, POLICY),
        (RETRAIN_STEPS, None, {}),
        # the drift response keeps its own setting beside the policy
        (
            DRIFT_REVIEW_STEPS,
            DRIFT_REVIEW_CONFIG,
            {
                "review_queue": {"config": {"review_classes": ["threat"], "drift_response": True}},
                "labeling_tasks": {"config": {"expert_classes": ["threat"]}},
            },
        ),
    ],
)
def test_requests_take_the_files_sections_of_their_steps(
    moderation_home, steps, job_config, expected_ops
):
    config = request_config(steps, job_config, moderation_home)
    assert config.get("ops", {}) == expected_ops


def test_the_tabular_demo_writes_no_file(tmp_path):
    settings = Settings.from_env({"HITL_HOME": str(tmp_path / "home")})
    prepare_home(settings, DemoOptions(rows_per_batch=50))
    assert not settings.run_config_file.exists()


def test_the_landing_sensor_requests_runs_with_the_file(moderation_home, monkeypatch):
    """What the daemon does: a landed batch's scoring run carries the policy."""
    monkeypatch.setenv("HITL_HOME", str(moderation_home.home))
    landing = Path(moderation_home.landing)
    landing.mkdir(parents=True, exist_ok=True)
    (landing / "2026-01-12.parquet").write_bytes(b"not read by the sensor")
    production = ProductionSource(
        landing_dir=str(landing),
        quarantine_dir=str(moderation_home.quarantine),
        schema_path=str(moderation_home.schema_path),
    )
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"production": production})
        result = landing_sensor(context)
    requests = result.run_requests if hasattr(result, "run_requests") else list(result)
    (request,) = requests
    assert request.partition_key == "2026-01-12"
    assert request.run_config == {"ops": POLICY}


def test_a_run_config_file_elsewhere_is_named_by_the_variable(tmp_path):
    path = tmp_path / "team.yaml"
    settings = Settings.from_env({"HITL_HOME": str(tmp_path), "HITL_RUN_CONFIG": str(path)})
    assert settings.run_config_file == path
