"""Selection: decide per prediction whether a person reviews it, and record why."""

import dagster as dg
import pandas as pd

from hitl_pipeline.core.routing import RoutingPolicy, route_predictions
from hitl_pipeline.core.types import REASONS, ROUTE, ROUTE_REVIEW, DriftSummary
from hitl_pipeline.defs.partitions import BATCH_PARTITIONS
from hitl_pipeline.resources.local_store import LocalStore

_DEFAULTS = RoutingPolicy()


class RoutingConfig(dg.Config):
    """Routing tunables; defaults come from :class:`RoutingPolicy`."""

    confidence_threshold: float = _DEFAULTS.confidence_threshold
    review_capacity: int = _DEFAULTS.review_capacity
    audit_rate: float = _DEFAULTS.audit_rate
    drift_capacity_multiplier: float = _DEFAULTS.drift_capacity_multiplier
    # Set by the drift sensor: review as if the drift check had failed.
    drift_response: bool = False

    def policy(self) -> RoutingPolicy:
        return RoutingPolicy(
            confidence_threshold=self.confidence_threshold,
            review_capacity=self.review_capacity,
            audit_rate=self.audit_rate,
            drift_capacity_multiplier=self.drift_capacity_multiplier,
        )


@dg.asset(partitions_def=BATCH_PARTITIONS, group_name="s04_selection", kinds={"pandas"})
def review_queue(
    context: dg.AssetExecutionContext,
    config: RoutingConfig,
    predictions: pd.DataFrame,
    drift_report: DriftSummary,
    local_store: LocalStore,
) -> dg.Output[pd.DataFrame]:
    """Every prediction with its route (review or auto-accept), reasons and priority."""
    # The drift alert is acted on by the drift sensor (a second, boosted review run), so
    # the regular run routes the same way whatever the drift report says.
    drift = config.drift_response
    routed = route_predictions(predictions, config.policy(), drift=drift)
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
            "reasons": dg.MetadataValue.json({str(k): int(v) for k, v in reasons.items()}),
            "decisions": dg.MetadataValue.path(str(decisions)),
        },
    )
