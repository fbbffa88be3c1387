"""``routing_threshold`` after a promotion, and ``review_queue`` routing with it.

Real Dagster materializations against real stores in ``tmp_path`` (MLflow on SQLite, a
DVC dataset repository with a local remote, the local decision/threshold store); no
Label Studio. Two stand-ins only: the landed batch (``production_batch``, the demo
stream's rows without labels) and ``drift_report`` (no drift), which are not under test;
``training_dataset`` is a version committed here with the real ``DvcDatasetStore``.
"""

from datetime import timedelta

import dagster as dg
import pandas as pd
import pytest

from hitl_pipeline.core.datasets import canonical_dataset, merge_labelled
from hitl_pipeline.core.routing import REASON_LOW_CONFIDENCE, RoutingPolicy
from hitl_pipeline.core.schema import save_schema
from hitl_pipeline.core.types import (
    CONFIDENCE,
    LABEL,
    LABEL_SOURCE,
    LABELLED_AT,
    MODEL_VERSION,
    REASONS,
    DatasetVersion,
    DriftSummary,
)
from hitl_pipeline.defs.partitions import BATCH_PARTITIONS
from hitl_pipeline.defs.resources import build_resources
from hitl_pipeline.defs.s02_inference import predictions
from hitl_pipeline.defs.s04_selection import fitted_threshold, review_queue, routing_threshold
from hitl_pipeline.defs.s08_training import candidate_model, passes_gate
from hitl_pipeline.defs.s09_deployment import champion_model
from hitl_pipeline.demo.stream import DEMO_SCHEMA, EVENT_TIME, DriftingStream
from hitl_pipeline.settings import Settings
from hitl_pipeline_tests.faults.retrain import LENIENT_GATE

STREAM = DriftingStream(seed_train_rows=800, seed_holdout_rows=300, rows_per_batch=300)
BATCHES = {"2026-06-08": 2, "2026-06-15": 3}  # partition -> stream batch
FAST = {"max_iter": 30, "learning_rate": 0.2}
DEFAULT_THRESHOLD = RoutingPolicy().confidence_threshold


@dg.asset(name="production_batch", partitions_def=BATCH_PARTITIONS)
def stand_in_batch(context: dg.AssetExecutionContext) -> pd.DataFrame:
    """The landed batch (features only), as ingest would hand it on."""
    return STREAM.batch(BATCHES[context.partition_key]).drop(columns=[LABEL])


@dg.asset(name="drift_report", partitions_def=BATCH_PARTITIONS)
def stand_in_drift() -> DriftSummary:
    return DriftSummary(
        dataset_drift=False,
        drift_share=0.0,
        drift_share_threshold=0.5,
        drifted_columns=(),
        column_scores={},
        column_methods={},
        prediction_drift=False,
        confidence_drift=False,
        reference_rows=800,
        current_rows=300,
    )


def _dataset(version: DatasetVersion) -> dg.AssetsDefinition:
    @dg.asset(name="training_dataset")
    def training_dataset() -> DatasetVersion:
        return version

    return training_dataset


def _human(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(
        **{LABEL_SOURCE: "human", LABELLED_AT: frame[EVENT_TIME] + timedelta(days=1)}
    )


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("hitl-home")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HITL_HOME", str(home))
        for var in ("HITL_MLFLOW_TRACKING_URI", "HITL_DVC_REMOTE"):
            env.delenv(var, raising=False)
        settings = Settings.from_env()
        settings.schema_path.parent.mkdir(parents=True, exist_ok=True)
        save_schema(DEMO_SCHEMA, settings.schema_path)
        bound = build_resources(settings)
        resources = {
            k: bound[k] for k in ("production", "registry", "dataset_store", "local_store")
        }
        # outputs kept between materializations, as on a real instance
        resources["io_manager"] = dg.FilesystemIOManager(base_dir=str(home / "io"))
        yield resources


def _route(resources: dict, partition: str, *, score: bool) -> dg.ExecuteInProcessResult:
    """Route one batch; with ``score`` the current champion scores it first."""
    assets = [stand_in_batch, predictions, stand_in_drift, review_queue]
    result = dg.materialize(
        assets,
        selection=None if score else [review_queue.key],
        partition_key=partition,
        resources=resources,
    )
    assert result.success
    return result


def _queue(result: dg.ExecuteInProcessResult) -> tuple[pd.DataFrame, dict]:
    (mat,) = result.asset_materializations_for_node("review_queue")
    meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    return result.output_for_node("review_queue"), meta


def _retrain(resources: dict, version: DatasetVersion, threshold_config: dict | None = None):
    # the gate is lenient: this test is about the threshold after a promotion, and a
    # version is promoted only with a passing gate decision of its own
    run_config = {
        "ops": {
            "candidate_model": {"config": FAST},
            "candidate_model_passes_gate": {"config": LENIENT_GATE},
        }
    }
    if threshold_config:
        run_config["ops"]["routing_threshold"] = {"config": threshold_config}
    result = dg.materialize(
        [_dataset(version), candidate_model, passes_gate, champion_model, routing_threshold],
        resources=resources,
        run_config=run_config,
    )
    assert result.success
    return result


def test_threshold_refitted_after_a_promotion_is_used_for_the_new_champions_batches(loop):
    resources = loop
    store, registry = resources["dataset_store"], resources["registry"]
    train, holdout = STREAM.seed_sets()
    gate_rows = _human(pd.concat([STREAM.batch(0), STREAM.batch(1)], ignore_index=True))
    frames = {
        "holdout": canonical_dataset(holdout, DEMO_SCHEMA),
        "human_holdout": canonical_dataset(gate_rows, DEMO_SCHEMA),
    }
    first = store.commit(
        frames={"training": canonical_dataset(train, DEMO_SCHEMA), **frames}, message="seed"
    )
    _retrain(resources, first)
    old = registry.champion()
    assert old is not None

    # a batch scored by the first champion, before any threshold is fitted for a newer one
    before, _ = _queue(_route(resources, "2026-06-08", score=True))
    assert set(before[MODEL_VERSION].astype(str)) == {old.version}

    labelled = _human(STREAM.batch(2))
    second = store.commit(
        frames={"training": merge_labelled(train, labelled, DEMO_SCHEMA), **frames},
        message="seed + the reviewed batch",
    )
    result = _retrain(resources, second)
    new = registry.champion()
    assert new is not None and new.version != old.version
    record = result.output_for_node("routing_threshold")
    assert record[MODEL_VERSION] == new.version
    fitted = record["threshold"]
    assert fitted is not None and 0.0 <= fitted <= 1.0
    assert fitted != DEFAULT_THRESHOLD  # otherwise "used" below would prove nothing
    # stored where review_queue reads it, for the new champion only
    assert fitted_threshold(resources["local_store"], new.version) == fitted
    assert fitted_threshold(resources["local_store"], old.version) is None

    # the new champion's next batch is routed with the fitted threshold
    routed, meta = _queue(_route(resources, "2026-06-15", score=True))
    assert set(routed[MODEL_VERSION].astype(str)) == {new.version}
    assert meta["threshold_source"] == "fitted"
    assert meta["confidence_threshold"] == fitted
    assert (routed["confidence_threshold"] == fitted).all()
    low = routed[REASONS].str.split(";").map(lambda codes: REASON_LOW_CONFIDENCE in codes)
    assert (low == (routed[CONFIDENCE] < fitted)).all()

    # a batch the previous champion scored keeps the configured threshold
    stale, stale_meta = _queue(_route(resources, "2026-06-08", score=False))
    assert set(stale[MODEL_VERSION].astype(str)) == {old.version}
    assert stale_meta["threshold_source"] == "config"
    assert stale_meta["confidence_threshold"] == DEFAULT_THRESHOLD

    # the costs drive the fit: a wrong auto-accept far dearer than a review sends more
    # items to people (a higher threshold) than the reverse
    roomy = {"review_capacity": 10_000}
    careful = _retrain(
        resources, second, {**roomy, "cost_wrong_accept": 50.0, "cost_review": 1.0}
    ).output_for_node("routing_threshold")
    frugal = _retrain(
        resources, second, {**roomy, "cost_wrong_accept": 1.0, "cost_review": 50.0}
    ).output_for_node("routing_threshold")
    assert careful["threshold"] > frugal["threshold"]
    assert careful["expected_reviews"] > frugal["expected_reviews"]
