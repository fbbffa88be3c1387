"""The deployment settings without a server: parsing, names, the instance file, errors.

No ``postgres`` marker: nothing here connects to a database.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hitl_pipeline.deployment import (
    DeploymentConfigError,
    PostgresDeployment,
    PostgresServer,
    label_studio_env,
    parse_postgres_url,
    postgres_from_env,
    with_installed_driver,
    write_instance_config,
)
from hitl_pipeline.settings import Settings

LOCAL = PostgresServer(host="127.0.0.1", port=5432, user="postgres")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://postgres@127.0.0.1:5432", LOCAL),
        ("postgresql://postgres@127.0.0.1", LOCAL),
        ("postgres://postgres@127.0.0.1:5432/", LOCAL),
        ("postgresql+psycopg2://postgres@127.0.0.1:5432/ignored_db", LOCAL),
        ("postgresql://db.internal:6543", PostgresServer("db.internal", 6543, "postgres")),
        ("postgresql://hitl%40ops@db:5432", PostgresServer("db", 5432, "hitl@ops")),
    ],
)
def test_server_urls_parse(url: str, expected: PostgresServer) -> None:
    assert parse_postgres_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:5432", "is not a PostgreSQL URL"),
        ("postgresql:///hitl", "names no host"),
        ("postgresql://u:secret@127.0.0.1", "PGPASSWORD"),
        ("postgresql://u@127.0.0.1:99999", "not a valid URL"),
        ("postgresql://u@127.0.0.1?sslmode=require", "query parameters"),
    ],
)
def test_bad_urls_name_the_variable_and_the_fix(url: str, message: str) -> None:
    with pytest.raises(DeploymentConfigError, match=message) as raised:
        parse_postgres_url(url)
    assert "HITL_POSTGRES_URL" in str(raised.value)
    assert "secret" not in str(raised.value)


@pytest.mark.parametrize("prefix", ["Hitl", "1hitl", "hitl-prod", "h" * 31, "a b"])
def test_bad_prefixes_name_the_variable(prefix: str) -> None:
    with pytest.raises(DeploymentConfigError, match="HITL_DB_PREFIX"):
        postgres_from_env({"HITL_POSTGRES_URL": "postgresql://u@h", "HITL_DB_PREFIX": prefix})


def test_one_setting_selects_postgres_for_all_three_stores(tmp_path: Path) -> None:
    env = {"HITL_HOME": str(tmp_path), "HITL_POSTGRES_URL": "postgresql://postgres@127.0.0.1"}
    settings = Settings.from_env({**env, "HITL_DB_PREFIX": "loop2"})
    assert settings.postgres == PostgresDeployment(LOCAL, "loop2")
    assert settings.postgres.databases == ("loop2_dagster", "loop2_mlflow", "loop2_labelstudio")
    assert settings.mlflow_tracking_uri == (
        "postgresql+psycopg2://postgres@127.0.0.1:5432/loop2_mlflow"
    )
    # the default prefix; an individual override wins; embedded without the setting
    assert Settings.from_env(env).postgres == PostgresDeployment(LOCAL, "hitl")
    override = Settings.from_env({**env, "HITL_MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    assert override.mlflow_tracking_uri == "http://mlflow:5000"
    embedded = Settings.from_env({"HITL_HOME": str(tmp_path)})
    assert embedded.postgres is None and embedded.mlflow_tracking_uri.startswith("sqlite:///")


def test_bare_postgres_uris_get_the_installed_driver() -> None:
    assert with_installed_driver("postgresql://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert with_installed_driver("postgres://u@h/db") == "postgresql+psycopg2://u@h/db"
    for unchanged in ("postgresql+psycopg2://u@h/db", "sqlite:////x.db", "http://h:5000", ""):
        assert with_installed_driver(unchanged) == unchanged


def test_label_studio_reads_its_database_from_postgre_variables() -> None:
    assert label_studio_env(PostgresServer("db", 6543, "ls"), "hitl_labelstudio") == {
        "DJANGO_DB": "default",
        "POSTGRE_NAME": "hitl_labelstudio",
        "POSTGRE_USER": "ls",
        "POSTGRE_PASSWORD": "",  # libpq's PGPASSWORD / ~/.pgpass, not Label Studio's default
        "POSTGRE_HOST": "db",
        "POSTGRE_PORT": "6543",
    }


def test_the_instance_file_is_written_once_and_a_sqlite_one_is_refused(tmp_path: Path) -> None:
    deployment = PostgresDeployment(LOCAL, "loop")
    path = write_instance_config(tmp_path / "dagster", deployment)
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert config["storage"]["postgres"]["postgres_db"] == {
        "username": "postgres",
        "hostname": "127.0.0.1",
        "port": 5432,
        "db_name": "loop_dagster",
        "scheme": "postgresql+psycopg2",
    }
    assert config["telemetry"] == {"enabled": False}
    assert config["nux"] == {"enabled": False}
    assert config["concurrency"]["runs"] == {"max_concurrent_runs": 1}
    # kept as it is (edits included) when run again, also for another prefix
    path.write_text(path.read_text(encoding="utf-8") + "# mine\n", encoding="utf-8")
    write_instance_config(tmp_path / "dagster", PostgresDeployment(LOCAL, "other"))
    assert path.read_text(encoding="utf-8").endswith("# mine\n")

    embedded = tmp_path / "embedded"
    embedded.mkdir()
    (embedded / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    with pytest.raises(DeploymentConfigError, match=r"SQLite.*HITL_POSTGRES_URL"):
        write_instance_config(embedded, deployment)


def test_paths_names_the_server_and_the_databases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from hitl_pipeline.cli import main as cli

    monkeypatch.setenv("HITL_HOME", str(tmp_path))
    monkeypatch.setenv("HITL_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
    monkeypatch.setenv("HITL_DB_PREFIX", "loop3")
    monkeypatch.delenv("HITL_MLFLOW_TRACKING_URI", raising=False)
    assert cli(["paths"]) == 0
    paths = json.loads(capsys.readouterr().out)
    assert paths["postgres"] == {
        "server": "postgresql://postgres@127.0.0.1:5432",
        "databases": ["loop3_dagster", "loop3_mlflow", "loop3_labelstudio"],
    }
    assert paths["mlflow_tracking_uri"].endswith("/loop3_mlflow")
    monkeypatch.setenv("HITL_POSTGRES_URL", "postgresql://user:pw@127.0.0.1")
    assert cli(["paths"]) == 2  # a malformed setting is reported, not a traceback
    assert "PGPASSWORD" in capsys.readouterr().err
