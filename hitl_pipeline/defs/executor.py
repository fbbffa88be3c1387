"""How a run's steps execute, chosen by ``HITL_EXECUTOR``.

- ``multiprocess`` (default): Dagster's default executor, one process per step on the
  machine that runs the run (``execution: config: in_process: {}`` still switches a run
  to one process, as before).
- ``in_process``: every step in the run's own process (small machines, debugging).
- ``celery``: steps are sent to Celery workers through ``HITL_CELERY_BROKER``, on the
  queue ``HITL_CELERY_QUEUE`` (results come back through ``HITL_CELERY_BACKEND``). Start
  the workers on the same broker and queue; see the README's "Running at scale".
- ``k8s``: each step in its own Kubernetes Job (``dagster-k8s``), for a run launched by
  the K8sRunLauncher of ``deploy/dagster.yaml``.

Whatever executes them, steps in a concurrency pool (``defs/pools.py``) never overlap:
every one of these executors asks the instance for a pool slot before starting a step.
Steps exchange outputs through ``RunScopedIOManager`` on ``$HITL_HOME``: Celery workers
on the same machine share it as is; workers on other machines (and Kubernetes step pods)
need that folder on a shared volume (NFS, a ReadWriteMany claim).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg

from hitl_pipeline.settings import Settings

IN_PROCESS, MULTIPROCESS, CELERY, K8S = "in_process", "multiprocess", "celery", "k8s"


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery executor's config: the broker and result backend the workers share.

    Args:
        settings: The loop's settings (``HITL_CELERY_BROKER``, ``HITL_CELERY_BACKEND``).

    Returns:
        ``broker`` and ``backend``, each a URL or ``{"env": VARIABLE}``, and the
        ``config_source`` with the queue (``HITL_CELERY_QUEUE``).
    """
    return {
        "broker": _source("HITL_CELERY_BROKER", settings.celery_broker),
        "backend": _source("HITL_CELERY_BACKEND", settings.celery_backend),
        # workers listen on this queue (-Q): loops sharing a broker never take each
        # other's steps
        "config_source": {"task_default_queue": settings.celery_queue},
    }


def _celery(settings: Settings) -> dg.ExecutorDefinition:
    from dagster_celery import celery_executor

    return celery_executor.configured(celery_config(settings))


def _k8s(settings: Settings) -> dg.ExecutorDefinition:
    # Namespace, image and service account come from the run launcher's config
    # (deploy/dagster.yaml), so the executor needs none of its own here.
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor


EXECUTORS: Mapping[str, Callable[[Settings], dg.ExecutorDefinition]] = {
    IN_PROCESS: lambda _settings: dg.in_process_executor,
    MULTIPROCESS: lambda _settings: dg.multi_or_in_process_executor,
    CELERY: _celery,
    K8S: _k8s,
}


class ExecutorSettingError(ValueError):
    """HITL_EXECUTOR names no executor this project knows."""


def _source(variable: str, value: str) -> str | dict[str, str]:
    """The variable's name when the value came from it, else the value itself.

    A broker URL can hold a password and executor config is shown in Dagster's UI: the run
    process resolves the variable itself when the executor starts.
    """
    return {"env": variable} if os.environ.get(variable) == value else value


def executor_for(settings: Settings) -> dg.ExecutorDefinition:
    """The executor that ``settings.executor`` (``HITL_EXECUTOR``) names.

    Args:
        settings: The loop's settings.

    Returns:
        The executor every job of the project runs with.

    Raises:
        ExecutorSettingError: ``HITL_EXECUTOR`` is not one of the known choices.
    """
    build = EXECUTORS.get(settings.executor)
    if build is None:
        raise ExecutorSettingError(
            f"HITL_EXECUTOR={settings.executor!r} is not an executor this project knows; "
            f"set HITL_EXECUTOR to one of: {', '.join(EXECUTORS)} (default {MULTIPROCESS})"
        )
    return build(settings)


@dg.definitions
def executor() -> dg.Definitions:
    return dg.Definitions(executor=executor_for(Settings.from_env()))
