"""Selection: decide per prediction whether a person reviews it, and record why.

``routing_threshold`` re-fits the cost-aware confidence threshold after each promotion
(``core.threshold``): the new champion's confidence is calibrated on the recent human
held-out labels (audited items weighted as the unbiased sample of the auto-accepted they
are), and the threshold minimising the expected cost of the latest batch is stored where
``review_queue`` reads it.
"""

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import dagster as dg
import pandas as pd

from hitl_pipeline.core.chunks import ParquetBatch, batch_chunks, parquet_chunks
from hitl_pipeline.core.inference import batch_confidence
from hitl_pipeline.core.loop import refit_threshold
from hitl_pipeline.core.routing import REASON_AUDIT, RoutingPolicy
from hitl_pipeline.core.streaming import route_chunks
from hitl_pipeline.core.types import (
    ITEM_ID,
    MODEL_VERSION,
    DatasetVersion,
    DriftSummary,
    ModelRef,
)
from hitl_pipeline.defs.config import SettingsConfig, config_class
from hitl_pipeline.defs.partitions import BATCH_PARTITIONS
from hitl_pipeline.defs.pools import CHAMPION_ALIAS_POOL
from hitl_pipeline.resources.dvc_store import DvcDatasetStore
from hitl_pipeline.resources.local_store import LocalStore
from hitl_pipeline.resources.mlflow_registry import MlflowRegistryResource
from hitl_pipeline.resources.production import ProductionSource

THRESHOLD_KIND, THRESHOLD_NAME = "routing", "threshold"

if TYPE_CHECKING:  # a type checker reads the fields through SettingsConfig
    RoutingConfig = SettingsConfig
else:
    RoutingConfig = config_class(
        RoutingPolicy,
        "RoutingConfig",
        extra={
            # use the threshold routing_threshold fitted for the scoring champion, when there
            # is one, instead of confidence_threshold
            "use_fitted_threshold": (bool, True),
            # set by the drift and audit sensors: route as the drift response
            "drift_response": (bool, False),
            # the asset's value holds every routed row (off: only the review queue; every
            # row's decision is in the decisions table either way). Unset: every row when the
            # batch has at most max_candidates rows (routed exactly, and small), else the
            # review queue alone, so a batch of millions of rows is never read back whole
            "output_every_row": (bool | None, None),
        },
        doc="Routing tunables, generated from core.routing.RoutingPolicy (see its docs); "
        "use_fitted_threshold, drift_response and output_every_row are the wiring's own.",
    )


def fitted_threshold(local_store: LocalStore, model_version: str) -> float | None:
    """The threshold fitted for this model version, if ``routing_threshold`` stored one."""
    table = local_store.read_table(kind=THRESHOLD_KIND, name=THRESHOLD_NAME)
    if table is None or table.empty:
        return None
    row = table.iloc[-1]
    return float(row["threshold"]) if str(row[MODEL_VERSION]) == str(model_version) else None


@dg.asset(partitions_def=BATCH_PARTITIONS, group_name="s04_selection", kinds={"pandas"})
def review_queue(
    context: dg.AssetExecutionContext,
    config: RoutingConfig,
    predictions: Any,
    drift_report: DriftSummary,
    local_store: LocalStore,
    production: ProductionSource,
) -> dg.Output[pd.DataFrame]:
    """Every prediction with its route (review or auto-accept), reasons and priority.

    The predictions are routed in two passes over their chunks (``BatchRouter`` keeps
    only the candidates the decisions need); every row's decision is written, chunk by
    chunk, to the ``decisions`` table. With ``output_every_row`` off, or unset and a
    batch of more than ``max_candidates`` rows, the asset's value is the review queue
    alone, so a batch of millions of rows is never one frame.
    """
    # The drift alert is acted on by the drift sensor (a second, boosted review run), so
    # the regular run routes the same way whatever the drift report says.
    drift = config.drift_response
    schema = production.schema()
    if isinstance(predictions, ParquetBatch):
        version, columns = predictions.first(MODEL_VERSION), predictions.columns()
    else:
        version = predictions[MODEL_VERSION].iloc[0] if len(predictions) else None
        columns = list(predictions.columns)
    version = "" if version is None else str(version)
    threshold = fitted_threshold(local_store, version) if config.use_fitted_threshold else None
    target = local_store.table_path(kind="decisions", name=context.partition_key)
    routed = route_chunks(
        lambda wanted: batch_chunks(predictions, production.chunk_rows, columns=wanted),
        target,
        config.to_settings(),
        schema,
        total_rows=len(predictions),
        columns=columns,
        threshold=threshold,
        drift=drift,
        drifted_columns=drift_report.drifted_columns,
    )
    rows = routed.plan.rows
    to_review = routed.plan.to_review
    every_row = config.output_every_row
    if every_row is None:
        every_row = rows <= config.max_candidates
    value = pd.read_parquet(target) if every_row else routed.review
    return dg.Output(
        value,
        metadata={
            "rows": rows,
            "to_review": to_review,
            "review_share": to_review / rows if rows else 0.0,
            "drift_response": drift,
            "batch_drift": drift_report.dataset_drift,
            "confidence_threshold": threshold
            if threshold is not None
            else config.confidence_threshold,
            "threshold_source": "fitted" if threshold is not None else "config",
            "reasons": dg.MetadataValue.json(
                dict(sorted(routed.reasons.items(), key=lambda kv: (-kv[1], kv[0])))
            ),
            "decisions": dg.MetadataValue.path(str(target)),
            "routing_candidates": routed.plan.candidates,
            "output_rows": len(value),
        },
    )


@dg.asset(group_name="s04_selection", kinds={"pandas"}, pool=CHAMPION_ALIAS_POOL)
def routing_threshold(
    config: RoutingConfig,
    champion_model: ModelRef,
    training_dataset: DatasetVersion,
    registry: MlflowRegistryResource,
    dataset_store: DvcDatasetStore,
    local_store: LocalStore,
    production: ProductionSource,
) -> dg.Output[dict]:
    """The cost-minimising confidence threshold for the new champion, re-fitted from the
    labels that came back; ``review_queue`` uses it for batches this champion scores."""
    schema = production.schema()
    model = registry.load_model(ref=champion_model)
    held_out = dataset_store.load(version_id=training_dataset.version_id, name="human_holdout")
    ledger = local_store.read_ledger()
    audited_ids = (
        set(ledger.loc[ledger["reasons"].map(lambda r: REASON_AUDIT in tuple(r)), ITEM_ID])
        if len(ledger)
        else set()
    )
    # the batch the threshold is chosen on: the latest routed batch, re-scored by the
    # new champion (its confidence distribution is the one the next batch will resemble),
    # chunk by chunk and reading its features only: it may hold millions of rows
    names = local_store.table_names(kind="decisions")
    latest = (
        batch_confidence(
            model,
            parquet_chunks(
                local_store.table_path(kind="decisions", name=names[-1]),
                production.chunk_rows,
                columns=schema.feature_names,
            ),
            schema,
        )
        if names
        else None
    )
    choice = refit_threshold(
        model,
        held_out,
        held_out.iloc[0:0],
        schema,
        config.to_settings(),
        audited_ids=audited_ids,
        model_version=champion_model.version,
        batch_confidence=latest,
    )
    if choice is None:
        # nothing came back yet: the configured threshold stays in force
        return dg.Output(
            {MODEL_VERSION: champion_model.version, "threshold": None},
            metadata={"threshold": "not fitted: no human held-out labels yet"},
        )
    record = {
        MODEL_VERSION: champion_model.version,
        "threshold": choice.threshold,
        "expected_reviews": choice.reviews,
        "expected_cost": choice.expected_cost,
        "expected_wrong_accepts": choice.expected_wrong_accepts,
        "break_even": choice.break_even,
        "calibration_rows": len(held_out),
        "audited_rows": int(held_out[ITEM_ID].astype(str).isin(audited_ids).sum()),
        "batch": names[-1] if names else "human_holdout",
        "fitted_at": datetime.now(UTC).isoformat(),
    }
    path = local_store.write_table(
        kind=THRESHOLD_KIND, name=THRESHOLD_NAME, frame=pd.DataFrame([record])
    )
    return dg.Output(
        record,
        metadata={
            **{k: v for k, v in record.items() if k != "fitted_at"},  # type: ignore[misc]
            "table": dg.MetadataValue.path(str(path)),
        },
    )
