"""Selection: decide per prediction whether a person reviews it, and record why.

``routing_threshold`` re-fits the cost-aware confidence threshold after each promotion
(``core.threshold``): the new champion's confidence is calibrated on the recent human
held-out labels (audited items weighted as the unbiased sample of the auto-accepted they
are), and the threshold minimising the expected cost of the latest batch is stored where
``review_queue`` reads it.
"""

from datetime import UTC, datetime

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from hitl_pipeline.core.inference import score_batch
from hitl_pipeline.core.routing import REASON_AUDIT, RoutingPolicy, route_predictions
from hitl_pipeline.core.threshold import calibrate, choose_threshold
from hitl_pipeline.core.types import (
    CONFIDENCE,
    ITEM_ID,
    MODEL_VERSION,
    PREDICTED_LABEL,
    REASONS,
    ROUTE,
    ROUTE_REVIEW,
    DatasetVersion,
    DriftSummary,
    ModelRef,
)
from hitl_pipeline.defs.partitions import BATCH_PARTITIONS
from hitl_pipeline.resources.dvc_store import DvcDatasetStore
from hitl_pipeline.resources.local_store import LocalStore
from hitl_pipeline.resources.mlflow_registry import MlflowRegistryResource
from hitl_pipeline.resources.production import ProductionSource

_DEFAULTS = RoutingPolicy()
THRESHOLD_KIND, THRESHOLD_NAME = "routing", "threshold"


class RoutingConfig(dg.Config):
    """Routing tunables; defaults come from :class:`RoutingPolicy`."""

    confidence_threshold: float = _DEFAULTS.confidence_threshold
    review_capacity: int = _DEFAULTS.review_capacity
    audit_rate: float = _DEFAULTS.audit_rate
    drift_capacity_multiplier: float = _DEFAULTS.drift_capacity_multiplier
    disagreement_threshold: float = _DEFAULTS.disagreement_threshold
    ood_threshold: float = _DEFAULTS.ood_threshold
    # predicted classes / feature rules (pandas ``eval`` expressions) always reviewed
    review_classes: list[str] = Field(default_factory=list)
    review_rules: list[str] = Field(default_factory=list)
    diversity: bool = _DEFAULTS.diversity
    stratify: bool = _DEFAULTS.stratify
    drift_weight: float = _DEFAULTS.drift_weight
    # Use the threshold ``routing_threshold`` fitted for the scoring champion, when there
    # is one, instead of ``confidence_threshold``.
    use_fitted_threshold: bool = True
    # Set by the drift sensor: review as if the drift check had failed.
    drift_response: bool = False

    def policy(self, *, threshold: float | None = None) -> RoutingPolicy:
        return RoutingPolicy(
            confidence_threshold=self.confidence_threshold if threshold is None else threshold,
            review_capacity=self.review_capacity,
            audit_rate=self.audit_rate,
            drift_capacity_multiplier=self.drift_capacity_multiplier,
            disagreement_threshold=self.disagreement_threshold,
            ood_threshold=self.ood_threshold,
            review_classes=tuple(self.review_classes),
            review_rules=tuple(self.review_rules),
            diversity=self.diversity,
            stratify=self.stratify,
            drift_weight=self.drift_weight,
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
    predictions: pd.DataFrame,
    drift_report: DriftSummary,
    local_store: LocalStore,
    production: ProductionSource,
) -> dg.Output[pd.DataFrame]:
    """Every prediction with its route (review or auto-accept), reasons and priority."""
    # The drift alert is acted on by the drift sensor (a second, boosted review run), so
    # the regular run routes the same way whatever the drift report says.
    drift = config.drift_response
    version = str(predictions[MODEL_VERSION].iloc[0]) if len(predictions) else ""
    threshold = fitted_threshold(local_store, version) if config.use_fitted_threshold else None
    routed = route_predictions(
        predictions,
        config.policy(threshold=threshold),
        drift=drift,
        schema=production.schema(),
        drifted_columns=drift_report.drifted_columns,
    )
    decisions = local_store.write_table(kind="decisions", name=context.partition_key, frame=routed)
    reasons = routed[REASONS].str.split(";").explode().value_counts().to_dict()
    to_review = int((routed[ROUTE] == ROUTE_REVIEW).sum())
    return dg.Output(
        routed,
        metadata={
            "rows": len(routed),
            "to_review": to_review,
            "review_share": to_review / len(routed) if len(routed) else 0.0,
            "drift_response": drift,
            "batch_drift": drift_report.dataset_drift,
            "confidence_threshold": threshold
            if threshold is not None
            else config.confidence_threshold,
            "threshold_source": "fitted" if threshold is not None else "config",
            "reasons": dg.MetadataValue.json({str(k): int(v) for k, v in reasons.items()}),
            "decisions": dg.MetadataValue.path(str(decisions)),
        },
    )


class ThresholdConfig(dg.Config):
    cost_wrong_accept: float = _DEFAULTS.cost_wrong_accept
    cost_review: float = _DEFAULTS.cost_review
    review_capacity: int = _DEFAULTS.review_capacity
    audit_rate: float = _DEFAULTS.audit_rate


@dg.asset(group_name="s04_selection", kinds={"pandas"})
def routing_threshold(
    config: ThresholdConfig,
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
    if held_out.empty:
        # nothing came back yet: the configured threshold stays in force
        return dg.Output(
            {MODEL_VERSION: champion_model.version, "threshold": None},
            metadata={"threshold": "not fitted: no human held-out labels yet"},
        )
    scored = score_batch(model, held_out, schema, model_version=champion_model.version)
    correct = (
        scored[PREDICTED_LABEL].astype(str).to_numpy()
        == held_out[schema.target].astype(str).to_numpy()
    )
    ledger = local_store.read_ledger()
    audited_ids = (
        set(ledger.loc[ledger["reasons"].map(lambda r: REASON_AUDIT in tuple(r)), ITEM_ID])
        if len(ledger)
        else set()
    )
    audited = scored[ITEM_ID].astype(str).isin(audited_ids).to_numpy()
    weights = np.where(audited, 1.0 / max(config.audit_rate, 1e-6), 1.0)
    calibration = calibrate(scored[CONFIDENCE].to_numpy(), correct, weights=weights)

    # the batch the threshold is chosen on: the latest routed batch, re-scored by the
    # new champion (its confidence distribution is the one the next batch will resemble)
    names = local_store.table_names(kind="decisions")
    latest = local_store.read_table(kind="decisions", name=names[-1]) if names else None
    batch = latest if latest is not None and len(latest) else held_out
    batch = batch[[c for c in batch.columns if c not in (MODEL_VERSION,)]]
    confidence = score_batch(model, batch, schema, model_version=champion_model.version)[
        CONFIDENCE
    ].to_numpy()
    choice = choose_threshold(
        confidence,
        cost_wrong_accept=config.cost_wrong_accept,
        cost_review=config.cost_review,
        capacity=config.review_capacity,
        calibration=calibration,
    )
    record = {
        MODEL_VERSION: champion_model.version,
        "threshold": choice.threshold,
        "expected_reviews": choice.reviews,
        "expected_cost": choice.expected_cost,
        "expected_wrong_accepts": choice.expected_wrong_accepts,
        "break_even": choice.break_even,
        "calibration_rows": len(scored),
        "audited_rows": int(audited.sum()),
        "batch": names[-1] if names else "human_holdout",
        "fitted_at": datetime.now(UTC).isoformat(),
    }
    path = local_store.write_table(
        kind=THRESHOLD_KIND, name=THRESHOLD_NAME, frame=pd.DataFrame([record])
    )
    return dg.Output(
        record,
        metadata={
            **{k: v for k, v in record.items() if k != "fitted_at"},
            "table": dg.MetadataValue.path(str(path)),
        },
    )
