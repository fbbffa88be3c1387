"""Every private API of Dagster, MLflow and Evidently the project relies on, in one place.

These names are not part of the libraries' public interfaces and may move in any
release. Each is reached through a function here (imported lazily, so that ``core``
can use the Evidently ones without importing Dagster), and
``hitl_pipeline_tests/test_internals.py`` pins them to the locked versions: after an
upgrade that test says which one moved.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecord as CheckRecord,
    )

__all__ = [
    "CHECKED_VERSIONS",
    "CheckRecord",
    "asset_check_status",
    "bind_defs_state_storage",
    "dagster_config_errors",
    "evidently_stattests",
    "mlflow_uri_globals",
    "restore_mlflow_uri_globals",
    "schedule_ticks",
    "validate_instance_folder",
]

# The versions these names were checked against (the locked ones in uv.lock).
CHECKED_VERSIONS = {"dagster": "1.13.27", "evidently": "0.7.23", "mlflow": "3.17.2"}


# --- Dagster ---------------------------------------------------------------------------
def asset_check_status() -> Any:
    """``AssetCheckExecutionRecordStatus``: the status filter of
    ``DagsterInstance.event_log_storage.get_asset_check_execution_history`` (the
    sensors read which check evaluations failed; no public type exists for it)."""
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecordStatus,
    )

    return AssetCheckExecutionRecordStatus


def bind_defs_state_storage(storage: Any) -> AbstractContextManager[Any]:
    """``set_defs_state_storage``: lets definitions load against a live instance's state
    storage (see ``demo.runner.load_definitions`` for why)."""
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    return set_defs_state_storage(storage)


def schedule_ticks(cron: str, start_timestamp: float, timezone: str) -> Iterator[Any]:
    """The tick times Dagster's scheduler derives from a cron string (for tests that pin
    the weekly schedule's next ticks)."""
    from dagster._utils.schedules import schedule_execution_time_iterator

    return schedule_execution_time_iterator(start_timestamp, cron, timezone)


def dagster_config_errors(schema: Any, value: Any) -> list[str]:
    """``dagster._config.validate_config``: what is wrong with ``value`` against a Dagster
    config schema (a config type, or a dict of fields), empty when it is valid. Sources
    such as ``{env: NAME}`` are checked for their shape, not resolved. (deploy/ tests
    check the cluster's run launcher and executor config against dagster-k8s with it.)"""
    from dagster._config import validate_config

    result = validate_config(schema, value)
    return [] if result.success else [error.message for error in result.errors or ()]


def validate_instance_folder(folder: str) -> Any:
    """``dagster_instance_config``: ``<folder>/dagster.yaml`` checked against the instance
    schema without building the instance (no database, no cluster); the validated config.

    Raises:
        dagster.DagsterInvalidConfigError: naming each key that is wrong.
    """
    from dagster._core.instance.config import dagster_instance_config

    config, _custom_class = dagster_instance_config(folder)
    return config


# --- MLflow ----------------------------------------------------------------------------
def mlflow_uri_globals() -> tuple[str | None, str | None]:
    """MLflow's process-global tracking and registry URIs as set (None: never set).

    ``mlflow.get_tracking_uri()`` would resolve an unset URI to a default, which could
    then not be restored as "unset"; the module globals hold the raw values.
    """
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    return tracking_utils._tracking_uri, registry_utils._registry_uri


def restore_mlflow_uri_globals(tracking: str | None, registry: str | None) -> None:
    """Put back what ``mlflow_uri_globals`` returned (None means unset, as MLflow's own
    ``_use_tracking_uri`` restores it).

    Setting a URI also exports it (``MLFLOW_TRACKING_URI``, ``MLFLOW_REGISTRY_URI``) for
    subprocesses, and a registry URI exported by an earlier block outlives a restored
    global: every later client of the process would read that registry. The exported
    registry URI is made to match the restored one.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils

    mlflow.set_tracking_uri(tracking)  # type: ignore[arg-type]  # exports or unsets it
    registry_utils._registry_uri = registry  # type: ignore[assignment]
    if registry is None:
        os.environ.pop("MLFLOW_REGISTRY_URI", None)
    else:
        os.environ["MLFLOW_REGISTRY_URI"] = registry


# --- Evidently -------------------------------------------------------------------------
def evidently_stattests() -> tuple[Any, Any, dict[str, Any], Any]:
    """Evidently's stattest registry: ``(StatTest, register_stattest, registered,
    ColumnType)``. Our chi-square homogeneity test is registered there, and the
    registry maps a method name to the display name Evidently reports."""
    from evidently.legacy.calculations.stattests.registry import (
        StatTest,
        _registered_stat_tests,
        register_stattest,
    )
    from evidently.legacy.core import ColumnType

    return StatTest, register_stattest, _registered_stat_tests, ColumnType
