"""Fixtures of the scale tests: PostgreSQL, the RabbitMQ broker, Celery workers, a loop home.

Each service a test needs is checked first; when it does not answer, the test FAILS with
a message naming the service and the variable that points elsewhere (never a skip):

- PostgreSQL: ``HITL_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432``)
- RabbitMQ: ``HITL_TEST_CELERY_BROKER`` (default ``HITL_CELERY_BROKER``'s default,
  ``pyamqp://guest:guest@127.0.0.1:5672//``)

A loop home here keeps the Dagster instance and MLflow in databases of its own on that
server (``HITL_POSTGRES_URL`` + a random ``HITL_DB_PREFIX``), dropped afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from hitl_pipeline.demo.runner import DemoOptions, prepare_home
from hitl_pipeline.deployment import (
    PostgresDeployment,
    write_instance_config,
)
from hitl_pipeline.settings import DEFAULT_CELERY_BACKEND, DEFAULT_CELERY_BROKER, Settings

# one PostgreSQL check and one per-test deployment for every suite that needs them
from hitl_pipeline_tests.postgres.conftest import (  # noqa: F401 (fixtures)
    postgres_deployment,
    postgres_server,
)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TEST_BROKER_VARIABLE = "HITL_TEST_CELERY_BROKER"


@pytest.fixture(scope="session")
def celery_broker() -> str:
    """The tests' RabbitMQ broker URL; every test using it fails when it is down."""
    from kombu import Connection

    url = os.environ.get(TEST_BROKER_VARIABLE) or DEFAULT_CELERY_BROKER
    try:
        with Connection(url, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=2, interval_start=1, interval_step=1)
    except Exception as exc:  # kombu raises the transport's own errors
        pytest.fail(
            f"the Celery broker (RabbitMQ) is not reachable at {_safe(url)}: start it, or "
            f"point {TEST_BROKER_VARIABLE} at one (this test is marked celery). "
            f"{type(exc).__name__}: {exc}",
            pytrace=False,
        )
    return url


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


@dataclass
class LoopHome:
    """A loop's home whose Dagster instance and MLflow store live in PostgreSQL."""

    settings: Settings
    env: dict[str, str]  # what every process of the loop gets (workers, daemon, runs)
    deployment: PostgresDeployment
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def dagster_yaml(self) -> Path:
        return self.settings.dagster_home / "dagster.yaml"

    def configure_instance(self, **sections: Any) -> None:
        """Merge top-level sections into ``dagster.yaml`` (the Postgres storage stays)."""
        config = yaml.safe_load(self.dagster_yaml.read_text(encoding="utf-8")) or {}
        for key, value in sections.items():
            current = config.get(key)
            if isinstance(current, dict) and isinstance(value, dict):
                config[key] = _merge(current, value)
            else:
                config[key] = value
        self.dagster_yaml.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    def spawn(self, args: list[str], log_name: str) -> subprocess.Popen:
        """A process of the loop (own session, output to a log under the home)."""
        log = self.settings.home / "logs" / f"{log_name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            process = subprocess.Popen(
                args,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def log_tail(self, log_name: str, chars: int = 3000) -> str:
        log = self.settings.home / "logs" / f"{log_name}.log"
        return log.read_text(encoding="utf-8", errors="replace")[-chars:] if log.is_file() else ""

    def stop(self, process: subprocess.Popen, timeout_s: float = 30) -> None:
        """Stop a process this home started, by its PID (its session's children too)."""
        if process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=timeout_s)


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(merged.get(key), dict) and isinstance(value, Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def make_loop_home(
    home: Path,
    deployment: PostgresDeployment,
    *,
    label_studio: Any,
    executor: str,
    rows_per_batch: int,
    project: str,
    extra_env: Mapping[str, str] | None = None,
) -> LoopHome:
    """A fresh loop home: seed data and schema, Postgres instance, Label Studio project.

    Args:
        home: the (empty) folder to use as ``HITL_HOME``.
        deployment: the test's databases.
        label_studio: the session's Label Studio (``label_studio`` fixture).
        executor: ``HITL_EXECUTOR`` of every process of the loop.
        rows_per_batch: rows of each demo batch.
        project: the Label Studio review project of this loop (never shared).
        extra_env: more variables for the loop's processes.
    """
    env = {
        **os.environ,
        "HITL_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "HITL_POSTGRES_URL": deployment.server.display,
        "HITL_DB_PREFIX": deployment.prefix,
        "HITL_LABEL_STUDIO_URL": label_studio.url,
        "HITL_LABEL_STUDIO_API_KEY": label_studio.token,
        "HITL_LABEL_STUDIO_PROJECT": project,
        "HITL_EXECUTOR": executor,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        **(extra_env or {}),
    }
    env.pop("HITL_FAULT", None)
    env.pop("HITL_REVIEWERS", None)
    settings = Settings.from_env(env)
    prepare_home(settings, DemoOptions(rows_per_batch=rows_per_batch, drift_at_batch=10_000))
    write_instance_config(settings.dagster_home, deployment)
    loop = LoopHome(settings=settings, env=env, deployment=deployment)
    loop.configure_instance(
        telemetry={"enabled": False},
        concurrency={"pools": {"default_limit": 1}},
    )
    return loop


def wait_until(condition: Any, *, timeout_s: float, every_s: float = 1.0, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}", pytrace=False)


CELERY_BACKEND = DEFAULT_CELERY_BACKEND


def label_studio_tasks(url: str, token: str, base_title: str) -> dict[str, list[Any]]:
    """Every task (with its annotations) of each of a loop's projects, by review tier."""
    from label_studio_sdk import LabelStudio

    from hitl_pipeline.core.tiers import TIERS
    from hitl_pipeline.resources.label_studio import tier_project_title

    client = LabelStudio(base_url=url, api_key=token, timeout=120)
    ids = {project.title: project.id for project in client.projects.list()}
    return {
        tier: list(client.tasks.list(project=ids[title], page_size=500, fields="all"))
        for tier in TIERS
        if (title := tier_project_title(base_title, tier)) in ids
    }
