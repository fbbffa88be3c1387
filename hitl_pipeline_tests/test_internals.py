"""The private APIs of Dagster and Evidently behind ``hitl_pipeline.internals``, pinned.

When an upgrade moves one of them, this is the test that says which; re-check the
names against the new release and update ``CHECKED_VERSIONS``.
"""

import os
from datetime import UTC, datetime
from importlib.metadata import version

import dagster as dg
import pytest

from hitl_pipeline import internals


@pytest.mark.parametrize("package", sorted(internals.CHECKED_VERSIONS))
def test_the_installed_versions_are_the_ones_checked(package):
    assert version(package) == internals.CHECKED_VERSIONS[package], (
        f"{package} changed: re-check hitl_pipeline/internals.py against it"
    )


def test_the_check_status_enum_has_the_states_the_sensors_filter_on():
    status = internals.asset_check_status()

    assert {status.FAILED, status.SUCCEEDED} <= set(status)


def test_the_schedule_iterator_gives_the_next_monday_six_utc():
    start = datetime(2026, 12, 2, 12, 0, tzinfo=UTC).timestamp()  # a Wednesday

    ticks = internals.schedule_ticks("0 6 * * 1", start, "UTC")

    assert next(ticks).astimezone(UTC) == datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


def test_the_defs_state_storage_binds_around_a_block():
    instance = dg.DagsterInstance.ephemeral()

    with internals.bind_defs_state_storage(instance.defs_state_storage):
        pass


def test_the_evidently_registry_knows_the_methods_the_drift_policy_names():
    stat_test, register, registered, column_type = internals.evidently_stattests()

    assert callable(register) and callable(stat_test)
    assert {"wasserstein", "jensenshannon", "ks"} <= set(registered)
    assert hasattr(column_type, "Categorical") and hasattr(column_type, "Numerical")


def test_mlflow_uri_globals_read_and_restore_the_raw_values(tmp_path):
    import mlflow

    # MLflow may create a registry's SQLite file when the URI is set: keep it in tmp_path
    tracking, registry = f"sqlite:///{tmp_path}/tracking.db", f"sqlite:///{tmp_path}/registry.db"
    saved = internals.mlflow_uri_globals()
    try:
        mlflow.set_tracking_uri(tracking)
        mlflow.set_registry_uri(registry)
        assert internals.mlflow_uri_globals() == (tracking, registry)
        internals.restore_mlflow_uri_globals(None, None)
        assert internals.mlflow_uri_globals() == (None, None)
        # nothing exported is left behind for a later client to read
        assert "MLFLOW_REGISTRY_URI" not in os.environ
        assert "MLFLOW_TRACKING_URI" not in os.environ
    finally:
        internals.restore_mlflow_uri_globals(*saved)
    assert internals.mlflow_uri_globals() == saved


def test_dagster_config_errors_names_a_wrong_key_and_passes_a_right_one():
    schema = {"port": dg.Field(int), "host": dg.Field(str, is_required=False)}

    assert internals.dagster_config_errors(schema, {"port": 5432, "host": "db"}) == []
    errors = internals.dagster_config_errors(schema, {"prot": 5432})
    assert errors and any("prot" in e for e in errors)


def test_validate_instance_folder_checks_dagster_yaml_without_building_it(tmp_path):
    (tmp_path / "dagster.yaml").write_text(
        "storage:\n  postgres:\n    postgres_db:\n      hostname: nowhere.invalid\n"
        "      username: u\n      password: {env: NOT_SET_ANYWHERE}\n      db_name: d\n"
        "concurrency:\n  pools:\n    default_limit: 1\n",
        encoding="utf-8",
    )
    config = internals.validate_instance_folder(str(tmp_path))
    assert config["concurrency"]["pools"]["default_limit"] == 1

    (tmp_path / "dagster.yaml").write_text("run_monitoring:\n  enabeld: true\n", encoding="utf-8")
    with pytest.raises(dg.DagsterInvalidConfigError, match="enabeld"):
        internals.validate_instance_folder(str(tmp_path))
