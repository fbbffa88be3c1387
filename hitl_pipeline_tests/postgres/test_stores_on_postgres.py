"""The adapters against the real PostgreSQL server: MLflow's tracking store and registry,
the Dagster instance, and the local Label Studio, each in databases of its test's own."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from hitl_pipeline.core.types import DatasetVersion, GateDecision, ModelRef
from hitl_pipeline.demo.runner import use_home
from hitl_pipeline.deployment import (
    PostgresDeployment,
    PostgresServer,
    connect,
    database_comment,
    database_exists,
)
from hitl_pipeline.resources.errors import StoreUnavailable
from hitl_pipeline.resources.label_studio import LabelStudioResource
from hitl_pipeline.resources.label_studio_server import (
    LocalLabelStudio,
    PostgresDatabase,
    free_port,
    installed_version,
)
from hitl_pipeline.resources.mlflow_registry import (
    CHAMPION,
    MlflowRegistryResource,
    PromotionRefused,
    _postgres_advisory_lock,
)
from hitl_pipeline.settings import Settings
from hitl_pipeline_tests.resources.test_label_studio import CLASSES, Admin, make_tasks

pytestmark = pytest.mark.postgres

X = pd.DataFrame({"x1": [0.0, 1.0, 2.0, 3.0, 0.5, 2.5], "x2": [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]})
Y = ["neg", "neg", "pos", "pos", "neg", "pos"]
REPO = Path(__file__).resolve().parents[2]


def _dataset(n: int) -> DatasetVersion:
    md5 = f"{n:032x}"
    return DatasetVersion(
        version_id=f"dataset-v{n:04d}",
        git_rev=f"{n:040x}",
        md5=md5,
        rows=len(X),
        path="data/training.parquet",
        files={"data/training.parquet": md5},
    )


def _decision(promote: bool) -> GateDecision:
    return GateDecision(
        promote=promote,
        reasons=("test verdict",),
        challenger_metrics={"accuracy": 0.9},
        champion_metrics={"accuracy": 0.8},
        evaluated_rows=len(X),
    )


def _registry(deployment: PostgresDeployment, tmp_path: Path, name: str) -> MlflowRegistryResource:
    return MlflowRegistryResource(
        tracking_uri=deployment.mlflow_uri,
        artifact_location=(tmp_path / "artifacts").as_uri(),
        model_name=name,
    )


def _candidate(registry: MlflowRegistryResource, n: int) -> ModelRef:
    model = LogisticRegression(C=1.0 / n).fit(X, Y)
    return registry.log_candidate(
        model=model, params={"C": 1.0 / n}, metrics={"accuracy": 0.8}, tags={}, dataset=_dataset(n)
    )


def test_mlflow_registry_on_postgres_logs_gates_promotes_and_rolls_back(
    postgres_deployment: PostgresDeployment, tmp_path: Path
) -> None:
    registry = _registry(postgres_deployment, tmp_path, "clf-pg")
    assert not registry.store_exists()  # an empty database: no MLflow schema yet
    registry.check()  # creates the schema
    assert registry.store_exists()
    v1, v2, v3 = (_candidate(registry, n) for n in (1, 2, 3))
    assert [v.version for v in (v1, v2, v3)] == ["1", "2", "3"]
    loaded = registry.load_model(ref=v2)
    assert list(loaded.predict(X)) == list(LogisticRegression(C=0.5).fit(X, Y).predict(X))

    with pytest.raises(PromotionRefused, match="no gate decision"):
        registry.promote_gated(ref=v1)
    registry.log_gate_decision(ref=v1, decision=_decision(True), champion=None)
    assert registry.promote_gated(ref=v1) is None
    assert registry.champion() == registry.get_version(version="1")
    # v2 and v3 are both judged against v1; v2 wins the race, v3's compare-and-set fails
    registry.log_gate_decision(ref=v2, decision=_decision(True), champion=v1)
    registry.log_gate_decision(ref=v3, decision=_decision(True), champion=v1)
    replaced = registry.promote_gated(ref=v2)
    assert replaced is not None and replaced.version == "1"
    with pytest.raises(PromotionRefused, match="champion moved"):
        registry.promote_gated(ref=v3)
    restored = registry.rollback(reason="v2 misroutes", actor="alice")
    assert restored.version == "1" and CHAMPION in restored.aliases
    with registry._promotion_lock():  # a champion change nested in one: no self-deadlock
        assert registry.promote(ref=v1, reason="already champion") is None
    assert [(e.action, e.version) for e in registry.champion_history()] == [
        ("promote", "1"),
        ("promote", "2"),
        ("rollback", "1"),
    ]
    # it all lives in the PostgreSQL database
    connection = connect(postgres_deployment.server, postgres_deployment.database("mlflow"))
    with closing(connection), connection.cursor() as cursor:
        cursor.execute(
            "SELECT alias, version FROM registered_model_aliases WHERE name = %s", ("clf-pg",)
        )
        assert dict(cursor.fetchall()) == {"champion": 1}


def test_a_promotion_waits_for_the_advisory_lock_another_process_holds(
    postgres_deployment: PostgresDeployment, tmp_path: Path
) -> None:
    registry = _registry(postgres_deployment, tmp_path, "clf-lock")
    ref = _candidate(registry, 1)
    registry.log_gate_decision(ref=ref, decision=_decision(True), champion=None)
    script = textwrap.dedent(
        f"""
        from hitl_pipeline.core.types import ModelRef
        from hitl_pipeline.resources.mlflow_registry import MlflowRegistryResource
        registry = MlflowRegistryResource(
            tracking_uri={registry.tracking_uri!r},
            artifact_location={registry.artifact_location!r},
            model_name="clf-lock",
        )
        registry.promote_gated(ref=registry.get_version(version="1"))
        print("promoted", registry.champion().version)
        """
    )
    with _postgres_advisory_lock(registry.tracking_uri, "promotion:clf-lock"):
        promoter = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO
        )
        try:
            # the other process reaches the lock and waits on it, holding nothing
            assert _wait_for(lambda: _advisory_waiters(postgres_deployment) == 1, 120)
            assert promoter.poll() is None
            assert registry.champion() is None
        except BaseException:
            promoter.kill()
            raise
    out, _ = promoter.communicate(timeout=120)
    assert promoter.returncode == 0 and out.strip() == "promoted 1"
    assert registry.champion() == registry.get_version(version="1")


def test_check_names_the_settings_when_the_database_is_missing(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    missing = PostgresDeployment(server=postgres_server, prefix=f"t{secrets.token_hex(6)}")
    registry = _registry(missing, tmp_path, "clf-none")
    assert not registry.store_exists()
    with pytest.raises(StoreUnavailable) as raised:
        registry.check()
    message = str(raised.value)
    assert missing.database("mlflow") in message
    assert "HITL_MLFLOW_TRACKING_URI" in message and "hitl-pipeline up" in message


def test_dagster_instance_on_postgres_keeps_materializations_and_sensor_ticks(
    postgres_deployment: PostgresDeployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HITL_HOME", str(home))
    for key, value in postgres_deployment.environment().items():
        monkeypatch.setenv(key, value)
    settings = Settings.from_env()
    use_home(settings)
    code = tmp_path / "sensor_defs.py"
    code.write_text(
        textwrap.dedent(
            """
            import dagster as dg

            @dg.asset
            def numbers() -> list[int]:
                return [1, 2, 3]

            @dg.sensor(
                asset_selection=[numbers],
                minimum_interval_seconds=1,
                default_status=dg.DefaultSensorStatus.RUNNING,
            )
            def probe_sensor(context):
                return dg.SkipReason("probing the tick storage")

            defs = dg.Definitions(assets=[numbers], sensors=[probe_sensor])
            """
        ),
        encoding="utf-8",
    )
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1

        @dg.asset
        def numbers() -> list[int]:
            return [1, 2, 3]

        assert dg.materialize([numbers], instance=instance).success
        daemon = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-f", str(code)],
            cwd=tmp_path,
            env={**os.environ, "DAGSTER_HOME": str(settings.dagster_home)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            assert _wait_for(lambda: _ticks(instance, "probe_sensor"), 180), "no sensor tick"
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)  # the daemon and the code server it started
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait(timeout=30)
        ticks = _ticks(instance, "probe_sensor")
        assert ticks[0].skip_reason == "probing the tick storage"
        records = instance.fetch_materializations(dg.AssetKey("numbers"), limit=5).records
        assert len(records) == 1
    connection = connect(postgres_deployment.server, postgres_deployment.database("dagster"))
    with closing(connection), connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM job_ticks")
        assert cursor.fetchone()[0] >= 1
        cursor.execute("SELECT count(*) FROM runs")
        assert cursor.fetchone()[0] == 1
    assert not list(settings.dagster_home.rglob("*.db"))


@pytest.mark.labelstudio
def test_label_studio_on_postgres_starts_from_the_template_and_serves_the_resource(
    postgres_deployment: PostgresDeployment, tmp_path: Path
) -> None:
    database = PostgresDatabase(
        server=postgres_deployment.server, name=postgres_deployment.label_studio_database
    )
    token = "pg-" + secrets.token_hex(16)
    server = LocalLabelStudio(
        data_dir=tmp_path / "ls",
        port=free_port(),
        username="admin@pg.hitl.local",
        password=secrets.token_hex(8),
        token=token,
        postgres=database,
    )
    assert not database_exists(postgres_deployment.server, database.name)
    status = server.start(wait_timeout=600)
    try:
        assert status.ready
        template = database.template_name(installed_version())
        comment = database_comment(postgres_deployment.server, template) or ""
        assert comment.startswith(".hitl-template-complete")
        assert database_exists(postgres_deployment.server, database.name)
        assert not (tmp_path / "ls" / "label_studio.sqlite3").exists()
        resource = LabelStudioResource(
            url=server.url, api_key=token, project_title=f"pg {secrets.token_hex(4)}"
        )
        pushed = resource.push_tasks(classes=CLASSES, tasks=make_tasks(3))
        assert pushed.created == 3
        admin = Admin(server.url, token)
        ids = {t["data"]["item_id"]: t["id"] for t in admin.tasks(pushed.project_id)}
        admin.annotate(ids["item-0001"], "fox")
        (pulled,) = resource.pull_annotations()
        assert (pulled.item_id, pulled.label, pulled.annotator) == (
            "item-0001",
            "fox",
            "admin@pg.hitl.local",
        )
        connection = connect(postgres_deployment.server, database.name)
        with closing(connection), connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM task WHERE project_id = %s", (pushed.project_id,))
            assert cursor.fetchone()[0] == 3
    finally:
        server.stop()


# --- helpers --------------------------------------------------------------------------------
def _wait_for(condition: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return bool(condition())


def _advisory_waiters(deployment: PostgresDeployment) -> int:
    connection = connect(deployment.server)
    with closing(connection), connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = %s",
            (deployment.database("mlflow"),),
        )
        return int(cursor.fetchone()[0])


def _ticks(instance: dg.DagsterInstance, name: str) -> list[Any]:
    states = [s for s in instance.all_instigator_state() if s.instigator_name == name]
    if not states:
        return []
    return list(instance.get_ticks(states[0].instigator_origin_id, states[0].selector_id))


def test_postgres_errors_worth_repeating_are_retried_and_others_are_not(
    postgres_deployment: PostgresDeployment,
) -> None:
    """The retrying MLflow client's judgement, on errors the real server raises."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(postgres_deployment.mlflow_uri, poolclass=NullPool)
    raised: dict[str, BaseException] = {}
    try:
        with engine.connect() as first, engine.connect() as second:
            first.execute(sqlalchemy.text("CREATE TABLE probe (id int PRIMARY KEY, n int)"))
            first.execute(sqlalchemy.text("INSERT INTO probe VALUES (1, 0)"))
            first.commit()
            for connection in (first, second):
                connection.execute(sqlalchemy.text("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"))
                connection.execute(sqlalchemy.text("SELECT n FROM probe")).all()
            first.execute(sqlalchemy.text("UPDATE probe SET n = 1"))
            first.commit()
            with pytest.raises(sqlalchemy.exc.OperationalError) as serialization:
                second.execute(sqlalchemy.text("UPDATE probe SET n = 2"))
            raised["serialization"] = serialization.value
            second.rollback()
            with pytest.raises(sqlalchemy.exc.ProgrammingError) as missing:
                second.execute(sqlalchemy.text("SELECT * FROM no_such_table"))
            raised["missing table"] = missing.value
            second.rollback()
        with engine.connect() as doomed, pytest.raises(sqlalchemy.exc.OperationalError) as killed:
            doomed.execute(sqlalchemy.text("SELECT pg_terminate_backend(pg_backend_pid())"))
        raised["terminated"] = killed.value
    finally:
        engine.dispose()
    from hitl_pipeline.resources.mlflow_registry import _is_transient

    assert {name: _is_transient(exc) for name, exc in raised.items()} == {
        "serialization": True,
        "terminated": True,
        "missing table": False,
    }
