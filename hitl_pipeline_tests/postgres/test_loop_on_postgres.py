"""Two weekly cycles of the whole loop with every store on the real PostgreSQL server.

The same code as the embedded loop (``test_e2e``); only ``HITL_POSTGRES_URL`` and
``HITL_DB_PREFIX`` differ. ``hitl-pipeline up`` creates the databases, the local Label
Studio starts on its own PostgreSQL database, and the sensors and the schedule are
evaluated as the daemon would, their runs executed against the instance in PostgreSQL:
score, route, push, simulated reviewers answer, pull, dataset, retrain, gate, promote.
The tests then read each store back from PostgreSQL itself, and find no SQLite file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from hitl_pipeline.cli import _local_label_studio
from hitl_pipeline.cli import main as cli
from hitl_pipeline.defs.pools import POOLS
from hitl_pipeline.defs.resources import build_resources
from hitl_pipeline.demo.runner import DemoOptions, load_definitions
from hitl_pipeline.deployment import PostgresDeployment, connect
from hitl_pipeline.resources.label_studio_server import free_port
from hitl_pipeline.settings import Settings
from hitl_pipeline_tests.fixtures.demo_loop import run_reviewed_demo
from hitl_pipeline_tests.postgres.conftest import fresh_deployment

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CYCLES = 2
DRIFT_AT = 2


def _count(deployment: PostgresDeployment, store: str, query: str) -> int:
    connection = connect(deployment.server, deployment.database(store))
    with closing(connection), connection.cursor() as cursor:
        cursor.execute(query)
        return int(cursor.fetchone()[0])


@pytest.fixture(scope="module")
def loop(
    tmp_path_factory: pytest.TempPathFactory, postgres_server
) -> Iterator[tuple[Settings, dict[str, Any], PostgresDeployment]]:
    home = tmp_path_factory.mktemp("hitl-pg-home")
    with fresh_deployment(postgres_server) as deployment, pytest.MonkeyPatch.context() as env:
        for name in ("HITL_LABEL_STUDIO_URL", "HITL_LABEL_STUDIO_API_KEY", "HITL_REVIEWERS"):
            env.delenv(name, raising=False)
        env.delenv("HITL_MLFLOW_TRACKING_URI", raising=False)
        env.setenv("HITL_HOME", str(home))
        env.setenv("DAGSTER_HOME", str(home / "dagster"))
        env.setenv("HITL_LABEL_STUDIO_PORT", str(free_port()))
        up = cli(["up", "--postgres", postgres_server.display, "--prefix", deployment.prefix])
        assert up == 0
        for key, value in deployment.environment().items():
            env.setenv(key, value)
        settings = Settings.from_env()
        server = _local_label_studio(settings)
        server.start(wait_timeout=300)
        try:
            options = DemoOptions(cycles=CYCLES, rows_per_batch=400, drift_at_batch=DRIFT_AT)
            summary = run_reviewed_demo(settings, options)
            # kept beside the home: the wall time of each stage, when a run is slow
            (home / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
            yield settings, summary, deployment
        finally:
            server.stop()


def test_two_cycles_close_the_loop_on_postgres(loop) -> None:
    settings, summary, _ = loop
    cycles = summary["cycles"]
    assert len(cycles) == CYCLES
    assert all(c["score_run_ok"] and c["rows_scored"] > 0 for c in cycles)
    assert all(c["tasks_pushed"] > 0 for c in cycles)
    assert all(c["annotations_submitted"] >= c["tasks_pushed"] for c in cycles)
    assert cycles[-1]["drift_detected"] and not cycles[0]["drift_detected"]
    assert all(c["dataset_version"] for c in cycles), "a cycle made no dataset version"
    assert all(c["gate"] for c in cycles), "a cycle's retrain reached no gate decision"
    registry = build_resources(settings)["registry"]
    champion = registry.champion()
    assert champion is not None
    assert champion.version != summary["baseline_model_version"], "nothing was promoted"
    assert [e.action for e in registry.champion_history()].count("promote") >= 2


def test_each_store_holds_its_state_in_postgres_and_none_in_sqlite(loop) -> None:
    settings, summary, deployment = loop
    resources = build_resources(settings)
    assert settings.mlflow_tracking_uri == deployment.mlflow_uri
    versions = resources["registry"].list_versions()
    assert _count(deployment, "mlflow", "SELECT count(*) FROM model_versions") == len(versions)
    assert len(versions) == len(summary["registry_versions"]) >= 2

    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        runs = instance.get_runs_count()
    runs_in_database = _count(deployment, "dagster", "SELECT count(*) FROM runs")
    assert runs_in_database == runs
    assert runs >= 1 + 3 * CYCLES  # bootstrap; per cycle at least score, collect, retrain

    pushed = sum(c["tasks_pushed"] for c in summary["cycles"])
    queued = resources["label_studio"].queue_status_by_tier()
    routed = sum(s.total_tasks for tier, s in queued.items() if tier != "adjudication")
    assert routed == pushed
    assert _count(deployment, "labelstudio", "SELECT count(*) FROM task") >= pushed

    sqlite_files = [
        p for p in Path(settings.home).rglob("*") if p.suffix in (".db", ".sqlite3", ".sqlite")
    ]
    assert sqlite_files == []


def test_pools_and_the_run_scoped_io_manager_work_on_postgres(loop) -> None:
    settings, _, _ = loop
    with dg.DagsterInstance.get() as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        # every pool was used by a step, and its limit came from the instance's config
        keys = instance.event_log_storage.get_concurrency_keys()
        assert set(POOLS) <= keys
        infos = [instance.event_log_storage.get_concurrency_info(k) for k in POOLS]
        assert all(info.slot_count == 1 for info in infos)
        defs = load_definitions(instance)
        assert defs.resolve_job_def("retrain_job") is not None
    stored = list((settings.dagster_home / "outputs").rglob("*.pickle"))
    assert stored, "the run-scoped IO manager stored no output"


def test_status_and_doctor_read_the_postgres_stores(loop, capsys) -> None:
    _, summary, _ = loop
    assert cli(["doctor"]) == 0
    capsys.readouterr()
    assert cli(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    text = json.dumps(status)
    champion = build_resources(Settings.from_env())["registry"].champion()
    assert champion is not None
    assert f'"{champion.version}"' in text or f": {champion.version}" in text
    assert summary["cycles"][-1]["partition"] in text
