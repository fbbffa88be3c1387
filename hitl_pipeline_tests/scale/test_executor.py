"""HITL_EXECUTOR picks the executor every job runs with; an unknown value is named."""

from __future__ import annotations

import dagster as dg
import pytest

from hitl_pipeline.defs.executor import (
    EXECUTORS,
    ExecutorSettingError,
    celery_config,
    executor_for,
)
from hitl_pipeline.settings import DEFAULT_CELERY_BACKEND, DEFAULT_CELERY_BROKER, Settings


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "multi_or_in_process_executor"),  # unset: Dagster's default, as before
        ("", "multi_or_in_process_executor"),
        ("multiprocess", "multi_or_in_process_executor"),
        (" Multiprocess ", "multi_or_in_process_executor"),
        ("in_process", "in_process"),
        ("celery", "celery"),
        ("k8s", "k8s"),
    ],
)
def test_executor_choice(value: str | None, expected: str) -> None:
    env = {"HITL_HOME": "/tmp/unused"} | ({} if value is None else {"HITL_EXECUTOR": value})
    assert executor_for(Settings.from_env(env)).name == expected


@pytest.mark.parametrize("value", ["celery_k8s", "process", "docker", "multi-process"])
def test_unknown_executor_names_the_variable_and_the_choices(value: str) -> None:
    with pytest.raises(ExecutorSettingError) as raised:
        executor_for(Settings.from_env({"HITL_HOME": "/tmp/unused", "HITL_EXECUTOR": value}))
    message = str(raised.value)
    assert "HITL_EXECUTOR" in message and repr(value.lower()) in message
    assert all(choice in message for choice in EXECUTORS)


def _celery_config(env: dict[str, str]) -> dict[str, object]:
    settings = Settings.from_env({"HITL_HOME": "/tmp/unused", **env})
    assert executor_for(settings).name == "celery"
    return celery_config(settings)


def test_celery_defaults_are_the_local_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HITL_CELERY_BROKER", raising=False)
    monkeypatch.delenv("HITL_CELERY_BACKEND", raising=False)
    config = _celery_config({"HITL_EXECUTOR": "celery"})
    assert config == {
        "broker": DEFAULT_CELERY_BROKER,
        "backend": DEFAULT_CELERY_BACKEND,
        "config_source": {"task_default_queue": "dagster"},
    }
    assert DEFAULT_CELERY_BROKER == "pyamqp://guest:guest@127.0.0.1:5672//"
    assert DEFAULT_CELERY_BACKEND == "rpc://"


def test_celery_broker_from_the_environment_stays_a_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the URL may hold a password: the executor config (shown in the UI) names the variable
    broker = "pyamqp://hitl:s3cret@rabbit.internal:5672//"
    monkeypatch.setenv("HITL_CELERY_BROKER", broker)
    monkeypatch.setenv("HITL_CELERY_BACKEND", "redis://127.0.0.1:6379/1")
    config = _celery_config(
        {
            "HITL_EXECUTOR": "celery",
            "HITL_CELERY_BROKER": broker,
            "HITL_CELERY_BACKEND": "redis://127.0.0.1:6379/1",
        }
    )
    assert config == {
        "broker": {"env": "HITL_CELERY_BROKER"},
        "backend": {"env": "HITL_CELERY_BACKEND"},
        "config_source": {"task_default_queue": "dagster"},
    }
    assert "s3cret" not in repr(config)


def test_every_job_runs_with_the_chosen_executor(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from hitl_pipeline.demo.runner import load_definitions

    monkeypatch.setenv("HITL_HOME", str(tmp_path))
    monkeypatch.setenv("HITL_EXECUTOR", "in_process")
    with dg.instance_for_test() as instance:
        defs = load_definitions(instance)
    jobs = [j for j in defs.get_repository_def().get_all_jobs() if not j.name.startswith("__")]
    assert {"score_batch_job", "retrain_job"} <= {j.name for j in jobs}
    assert {j.executor_def.name for j in jobs} == {"in_process"}


def test_celery_queue_is_the_loops_own() -> None:
    config = _celery_config({"HITL_EXECUTOR": "celery", "HITL_CELERY_QUEUE": "hitl-loop-b"})
    assert config["config_source"] == {"task_default_queue": "hitl-loop-b"}


def test_label_studio_project_is_the_loops_own(tmp_path) -> None:
    from hitl_pipeline.defs.resources import build_resources

    default = build_resources(Settings.from_env({"HITL_HOME": str(tmp_path)}))
    assert default["label_studio"].project_title == "hitl-pipeline: review"
    own = build_resources(
        Settings.from_env({"HITL_HOME": str(tmp_path), "HITL_LABEL_STUDIO_PROJECT": "loop b"})
    )
    assert own["label_studio"].project_title == "loop b"
