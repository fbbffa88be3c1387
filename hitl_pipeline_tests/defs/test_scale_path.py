"""Landing file to review queue through the real assets, stores and run-scoped IO manager,
in chunks of 64 rows: the batch moves as Parquet files, and the decisions are those of the
whole-frame functions."""

import dagster as dg
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from hitl_pipeline.core.chunks import ParquetBatch
from hitl_pipeline.core.datasets import canonical_dataset
from hitl_pipeline.core.loop import route_batch
from hitl_pipeline.core.routing import RoutingPolicy
from hitl_pipeline.core.schema import save_schema
from hitl_pipeline.core.training import TrainingParams, train_model
from hitl_pipeline.core.types import LABEL, ROUTE, ROUTE_REVIEW
from hitl_pipeline.defs.resources import build_resources
from hitl_pipeline.defs.s01_ingest import production_batch
from hitl_pipeline.defs.s02_inference import predictions
from hitl_pipeline.defs.s03_monitoring import DATASET_VERSION_TAG, drift_report
from hitl_pipeline.defs.s04_selection import review_queue
from hitl_pipeline.demo.stream import DEMO_SCHEMA, DriftingStream
from hitl_pipeline.resources.production import ProductionSource
from hitl_pipeline.settings import Settings

PARTITION = "2026-06-08"
STREAM = DriftingStream(rows_per_batch=300, seed_train_rows=800, seed_holdout_rows=300)


@pytest.fixture
def loop(tmp_path, monkeypatch):
    monkeypatch.setenv("HITL_HOME", str(tmp_path / "home"))
    for var in ("HITL_MLFLOW_TRACKING_URI", "HITL_DVC_REMOTE"):
        monkeypatch.delenv(var, raising=False)
    settings = Settings.from_env()
    settings.schema_path.parent.mkdir(parents=True, exist_ok=True)
    save_schema(DEMO_SCHEMA, settings.schema_path)
    bound = build_resources(settings)
    resources = {k: bound[k] for k in ("registry", "dataset_store", "local_store", "io_manager")}
    resources["production"] = ProductionSource(
        landing_dir=str(settings.landing),
        quarantine_dir=str(settings.quarantine),
        schema_path=str(settings.schema_path),
        chunk_rows=64,
    )
    # a champion with its dataset version, as the retrain job leaves them
    train, holdout = STREAM.seed_sets()
    version = resources["dataset_store"].commit(
        frames={
            "training": canonical_dataset(train, DEMO_SCHEMA),
            "holdout": canonical_dataset(holdout, DEMO_SCHEMA),
        },
        message="seed",
    )
    with threadpool_limits(1):
        model = train_model(train, DEMO_SCHEMA, TrainingParams(max_iter=30)).model
    registry = resources["registry"]
    ref = registry.log_candidate(
        model=model,
        params={},
        metrics={},
        tags={DATASET_VERSION_TAG: version.version_id},
        dataset=version,
    )
    registry.promote(ref=ref, reason="test champion")
    settings.landing.mkdir(parents=True, exist_ok=True)
    STREAM.batch(2).drop(columns=[LABEL]).to_parquet(
        settings.landing / f"{PARTITION}.parquet", index=False
    )
    return resources, settings


def test_a_batch_goes_from_landing_to_review_queue_as_parquet_files(loop):
    resources, settings = loop
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [production_batch, predictions, drift_report, review_queue],
        partition_key=PARTITION,
        resources=resources,
        instance=instance,
    )
    assert result.success

    outputs = settings.dagster_home / "outputs"
    batch = result.output_for_node("production_batch")
    scores = result.output_for_node("predictions")
    for name, value in (("production_batch", batch), ("predictions", scores)):
        assert isinstance(value, ParquetBatch) and len(value) == 300
        assert value.path == str(outputs / name / PARTITION / f"{result.run_id}.batch.parquet")
    assert not list((settings.home / "staging").iterdir())  # every staged file moved

    # the same decisions as routing the whole scored frame at once
    drift = result.output_for_node("drift_report")
    expected = route_batch(
        scores.to_pandas(), RoutingPolicy(), DEMO_SCHEMA, drifted_columns=drift.drifted_columns
    )
    routed = result.output_for_node("review_queue")
    pd.testing.assert_frame_equal(routed, expected)
    decisions = resources["local_store"].read_table(kind="decisions", name=PARTITION)
    pd.testing.assert_frame_equal(decisions, expected)
    (mat,) = result.asset_materializations_for_node("drift_report")
    assert mat.metadata["drift_sample_rows"].value == 300
    assert mat.metadata["batch_rows"].value == 300

    # a later run routes the stored predictions again, keeping only the review queue
    again = dg.materialize(
        [review_queue, predictions.to_source_asset(), drift_report.to_source_asset()],
        partition_key=PARTITION,
        resources=resources,
        instance=instance,
        run_config={"ops": {"review_queue": {"config": {"output_every_row": False}}}},
    )
    queue = again.output_for_node("review_queue")
    review = expected[expected[ROUTE] == ROUTE_REVIEW].reset_index(drop=True)
    pd.testing.assert_frame_equal(queue, review)
    assert len(queue) == RoutingPolicy().review_capacity

    # unset, a batch larger than max_candidates keeps only its review queue as well
    large = dg.materialize(
        [review_queue, predictions.to_source_asset(), drift_report.to_source_asset()],
        partition_key=PARTITION,
        resources=resources,
        instance=instance,
        run_config={"ops": {"review_queue": {"config": {"max_candidates": 200}}}},
    )
    queue = large.output_for_node("review_queue")
    (mat,) = large.asset_materializations_for_node("review_queue")
    assert set(queue[ROUTE]) == {ROUTE_REVIEW}
    assert len(queue) == mat.metadata["to_review"].value == mat.metadata["output_rows"].value
    assert mat.metadata["rows"].value == 300
