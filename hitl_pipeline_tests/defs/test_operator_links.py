"""The operator's view through real Dagster materializations: links from asset and check
metadata to the MLflow run and model version, the run's source back to Dagster, and loop
health per batch with its warnings.

Real MLflow (SQLite + artifact folder) and DVC stores in a temporary HITL_HOME; no Label
Studio (the ledger is written directly).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import mlflow
import pytest

from hitl_pipeline.core.routing import REASON_AUDIT
from hitl_pipeline.core.tiers import TIER_GENERAL
from hitl_pipeline.core.types import Annotation
from hitl_pipeline.defs.resources import build_resources
from hitl_pipeline.defs.s10_loop_health import AUDIT_FALL_CHECK, CORRECTION_BAND_CHECK, loop_metrics
from hitl_pipeline.demo.stream import CLASSES
from hitl_pipeline.resources.local_store import annotations_to_frame
from hitl_pipeline.resources.mlflow_registry import (
    TAG_DAGSTER_RUN_URL,
    TAG_SOURCE_NAME,
)
from hitl_pipeline.settings import Settings
from hitl_pipeline_tests.faults.retrain import prepare_home, retrain, run_config

MLFLOW_UI = "http://mlflow.example:5555"
DAGSTER_UI = "http://dagster.example:3333"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, dict[str, Any]]]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HITL_HOME", str(tmp_path_factory.mktemp("hitl-home")))
        env.setenv("HITL_MLFLOW_UI_URL", MLFLOW_UI + "/")
        env.setenv("HITL_DAGSTER_UI_URL", DAGSTER_UI)
        for var in ("HITL_MLFLOW_TRACKING_URI", "HITL_DVC_REMOTE"):
            env.delenv(var, raising=False)
        settings = Settings.from_env()
        yield settings, build_resources(settings)


def _urls(metadata: dict[str, Any]) -> dict[str, str]:
    return {k: v.value for k, v in metadata.items() if isinstance(v, dg.UrlMetadataValue)}


def test_candidate_gate_and_champion_link_to_their_mlflow_run_and_version(home):
    settings, resources = home
    versions = prepare_home(settings)

    result = retrain(resources, versions["clean"], run_config(seed=1))

    assert result.success
    ref = result.output_for_node("candidate_model")
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)
    run = client.get_run(ref.run_id)
    run_page = f"{MLFLOW_UI}/#/experiments/{run.info.experiment_id}/runs/{ref.run_id}"
    version_page = f"{MLFLOW_UI}/#/models/hitl-classifier/versions/{ref.version}"

    candidate = _urls(result.asset_materializations_for_node("candidate_model")[0].metadata)
    assert candidate == {"mlflow_run": run_page, "mlflow_model_version": version_page}
    (gate,) = result.get_asset_check_evaluations()
    assert _urls(gate.metadata) == {
        "mlflow_run": run_page,
        "mlflow_model_version": version_page,
        "gate_decision": f"{run_page}/artifacts/gate/decision.json",
    }
    champion = _urls(result.asset_materializations_for_node("champion_model")[0].metadata)
    assert champion == {"mlflow_run": run_page, "mlflow_model_version": version_page}

    # and back: the MLflow run names the Dagster run that trained it as its source
    dagster_run = f"{DAGSTER_UI}/runs/{result.run_id}"
    assert run.data.tags[TAG_SOURCE_NAME] == dagster_run
    assert run.data.tags[TAG_DAGSTER_RUN_URL] == dagster_run
    (dataset,) = [
        d for d in run.inputs.dataset_inputs if d.dataset.name == versions["clean"].version_id
    ]
    assert dataset.dataset.digest == versions["clean"].md5
    assert run.data.tags["gate.promote"] == "true"


def _annotation(n: int, partition: str, *, corrected: bool, audit: bool) -> Annotation:
    at = datetime(2026, 1, 5, tzinfo=UTC) + timedelta(minutes=n)
    predicted = CLASSES[0]
    return Annotation(
        item_id=f"{partition}-{n}",
        task_id=n,
        annotation_id=n,
        label=CLASSES[1] if corrected else predicted,
        annotator="reviewer@test",
        completed_at=at,
        updated_at=at,
        was_cancelled=False,
        predicted_label=predicted,
        model_version="1",
        partition=partition,
        features={},
        reasons=(REASON_AUDIT,) if audit else ("uncertain",),
        tier=TIER_GENERAL,
    )


def _loop_metrics(resources: dict[str, Any]) -> dg.ExecuteInProcessResult:
    keys = ("local_store", "registry", "dataset_store", "production")
    return dg.materialize([loop_metrics], resources={k: resources[k] for k in keys})


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def test_no_chart_before_a_batch_has_numbers_and_the_checks_still_report(home):
    _, resources = home
    resources["local_store"].write_ledger(annotations_to_frame([]))

    result = _loop_metrics(resources)

    metadata = result.asset_materializations_for_node("loop_metrics")[0].metadata
    assert "chart" not in metadata and "chart_mlflow_run" not in metadata
    assert metadata["per_batch"].value.records == []
    checks = _checks(result)
    # evaluated (so never left "running"), passing, and saying why
    assert set(checks) == {CORRECTION_BAND_CHECK, AUDIT_FALL_CHECK}
    assert all(c.passed for c in checks.values())
    assert all("nothing to judge" in c.description for c in checks.values())


def test_out_of_band_corrections_and_a_falling_audit_warn(home):
    settings, resources = home
    # batch 1: 30 audited answers, all confirming the model; batch 2: 30 answers, 15
    # corrected (50%, above the band), 20 of them audited and 15 of those confirmed
    first = [_annotation(n, "2026-01-05", corrected=False, audit=True) for n in range(30)]
    second = [
        _annotation(100 + n, "2026-01-06", corrected=n < 15, audit=n >= 10) for n in range(30)
    ]
    resources["local_store"].write_ledger(annotations_to_frame(first + second))

    result = _loop_metrics(resources)

    checks = _checks(result)
    band, fall = checks[CORRECTION_BAND_CHECK], checks[AUDIT_FALL_CHECK]
    assert not band.passed and band.severity == dg.AssetCheckSeverity.WARN
    assert "2026-01-06: 50% of 30 labels corrected" in band.description
    assert not fall.passed and fall.severity == dg.AssetCheckSeverity.WARN
    assert fall.metadata["batch"].value == "2026-01-06"
    assert fall.metadata["value"].value == pytest.approx(0.75)  # 15 of the 20 audited confirmed

    metadata = result.asset_materializations_for_node("loop_metrics")[0].metadata
    rows = [r.data for r in metadata["per_batch"].value.records]
    assert [(r["partition"], r["labels"], r["correction_rate"]) for r in rows] == [
        ("2026-01-05", 30, 0.0),
        ("2026-01-06", 30, 0.5),
    ]
    # the chart is kept in MLflow and linked, not a path on this machine
    run_id = metadata["chart_mlflow_run"].value
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)
    run = client.get_run(run_id)
    assert metadata["chart"].value == (
        f"{MLFLOW_UI}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
        "/artifacts/loop_health/loop_health.png"
    )
    assert [a.path for a in client.list_artifacts(run_id, "loop_health")] == [
        "loop_health/loop_health.png"
    ]
    assert run.data.tags[TAG_SOURCE_NAME] == f"{DAGSTER_UI}/runs/{result.run_id}"
