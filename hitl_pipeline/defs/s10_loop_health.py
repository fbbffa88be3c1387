"""Loop health: is the human-in-the-loop machinery itself working, and what does it cost?"""

from datetime import UTC, datetime

import dagster as dg
import pandas as pd
from pydantic import Field

from hitl_pipeline.core.agreement import annotator_quality, latest_votes, summary_metrics
from hitl_pipeline.core.datasets import SOURCE_HUMAN, resolve_labels, split_out_of_schema
from hitl_pipeline.core.loop_health import (
    HEALTHY_CORRECTION_BAND,
    accuracy_regained,
    annotation_cost,
    audit_verdict,
    correction_rate,
    correction_rates,
    cost_per_accuracy_point,
    cycle_table,
    loop_close_seconds,
    render_chart,
)
from hitl_pipeline.core.tiers import TIER_ADJUDICATION, TIER_EXPERT, TIER_GENERAL
from hitl_pipeline.core.types import LABEL_SOURCE, LABELLED_AT, PREDICTED_LABEL, TIER
from hitl_pipeline.resources.dvc_store import DvcDatasetStore
from hitl_pipeline.resources.local_store import LocalStore
from hitl_pipeline.resources.mlflow_registry import (
    TAG_CHAMPION_SINCE,
    TAG_DATASET_VERSION,
    MlflowRegistryResource,
)
from hitl_pipeline.resources.production import ProductionSource

DRIFT_KEY = dg.AssetKey("drift_report")


class LoopHealthConfig(dg.Config):
    """Prices of one answer per review tier (any currency), for the cost figures."""

    price_per_label: dict[str, float] = Field(
        default_factory=lambda: {TIER_GENERAL: 0.10, TIER_EXPERT: 1.00, TIER_ADJUDICATION: 0.50}
    )
    default_price: float = 0.10


@dg.asset(
    group_name="s10_loop_health",
    deps=["human_labels", "champion_model"],
    kinds={"pandas", "matplotlib"},
)
def loop_metrics(
    context: dg.AssetExecutionContext,
    config: LoopHealthConfig,
    local_store: LocalStore,
    registry: MlflowRegistryResource,
    dataset_store: DvcDatasetStore,
    production: ProductionSource,
) -> dg.Output[pd.DataFrame]:
    """Per-batch loop figures (the value) and their latest state as plottable metadata."""
    classes = production.schema().classes
    every = local_store.read_ledger()
    ledger, _ = split_out_of_schema(every, classes)
    prices, default = config.price_per_label, config.default_price
    cycles = cycle_table(ledger, price_per_label=prices, default_price=default)
    labels = resolve_labels(ledger)
    votes = latest_votes(ledger, classes=classes)
    agreement = summary_metrics(votes, labels)
    audit = audit_verdict(ledger)
    trough, latest, cost_since = accuracy_regained(cycles)
    # an out-of-schema answer was paid for too
    cost = annotation_cost(every, price_per_label=prices, default_price=default)
    close = [_loop_close(registry, dataset_store, e.version, e.at) for e in _promotions(registry)]
    drift = context.instance.get_latest_materialization_event(DRIFT_KEY)
    drift_meta = (
        drift.asset_materialization.metadata if drift and drift.asset_materialization else {}
    )
    per_tier = {
        k.split("__", 1)[1]: float(v)
        for k, v in agreement.items()
        if k.startswith("agreement_alpha__")
    }
    chart = local_store.write_chart(
        kind="loop_health",
        name=datetime.now(UTC).strftime("%Y%m%dT%H%M%S"),
        png=render_chart(cycles, per_tier, title="hitl-pipeline loop health"),
    )
    band = correction_rates(ledger, by=TIER), correction_rates(ledger, by=PREDICTED_LABEL)
    return dg.Output(
        cycles,
        metadata={
            "correction_rate": _num(correction_rate(ledger)),
            "healthy_correction_band": "{:.0%}-{:.0%}".format(*HEALTHY_CORRECTION_BAND),
            "correction_by_queue_and_class": dg.MetadataValue.md(
                _markdown(pd.concat(band)[["group", "annotations", "rate", "message"]])
            ),
            "audit_pass_rate": _num(audit.rate),
            "audit_ci_low": _num(audit.low),
            "audit_ci_high": _num(audit.high),
            "audit_alert": audit.alert,
            "audit_message": audit.message,
            **agreement,
            "labels_spent": int((~ledger["was_cancelled"].astype(bool)).sum())
            if len(ledger)
            else 0,
            "annotations_total": len(ledger),
            "annotation_cost": cost,
            "accuracy_latest_batch": _num(latest),
            "accuracy_trough_batch": _num(trough),
            "cost_per_accuracy_point": _num(cost_per_accuracy_point(cost_since, trough, latest)),
            "time_to_loop_close_s": _num(close[-1] if close else None),
            "promotions": len(close),
            "drift_share_latest": float(drift_meta["drift_share"].value)
            if "drift_share" in drift_meta
            else float("nan"),
            "per_batch": dg.MetadataValue.md(_markdown(cycles.round(3))),
            "annotators": dg.MetadataValue.md(_markdown(annotator_quality(votes, labels).round(3))),
            "chart": dg.MetadataValue.path(str(chart)),
        },
    )


def _promotions(registry: MlflowRegistryResource) -> list:
    return [e for e in registry.champion_history() if e.action == "promote"]


def _loop_close(
    registry: MlflowRegistryResource, store: DvcDatasetStore, version: str, at: str
) -> float | None:
    """Seconds from the newest human label a promoted version was trained (or gated) on
    to the moment it started serving."""
    ref = registry.get_version(version=version)
    dataset = ref.tags.get(TAG_DATASET_VERSION)
    # the event's own time: a later rollback to this version rewrites its champion.* tags
    since = at or ref.tags.get(TAG_CHAMPION_SINCE)
    if not dataset or not since:
        return None
    stamps = []
    for name in ("training", "human_holdout"):
        try:
            frame = store.load(version_id=dataset, name=name)
        except (KeyError, FileNotFoundError):
            continue
        human = frame[frame[LABEL_SOURCE] == SOURCE_HUMAN][LABELLED_AT].dropna()
        if len(human):
            stamps.append(pd.to_datetime(human, utc=True).max().to_pydatetime())
    return loop_close_seconds(max(stamps) if stamps else None, datetime.fromisoformat(since))


def _markdown(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def _num(value: float | None) -> float:
    return float("nan") if value is None else float(value)
