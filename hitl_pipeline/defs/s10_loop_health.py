"""Loop health: is the human-in-the-loop machinery itself working, and what does it cost?

The figures are per batch (partition): a table in the metadata and a chart kept as an
MLflow artifact (linked from the metadata), drawn only once a batch has numbers. Two
checks of severity WARN judge the newest batch with enough evidence: its correction rate
against the healthy band, and its audit pass rate against the earlier batches. Both are
evaluated by ``loop_metrics`` itself, so they never wait on a run that does not run them.
"""

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import dagster as dg
import pandas as pd
from pydantic import Field

from hitl_pipeline.core.agreement import annotator_quality, latest_votes, summary_metrics
from hitl_pipeline.core.datasets import SOURCE_HUMAN, resolve_labels, split_out_of_schema
from hitl_pipeline.core.gate import EDGE_CASES, HUMAN_HOLDOUT
from hitl_pipeline.core.loop import SELECTION, TRAINING
from hitl_pipeline.core.loop_health import (
    BatchWarning,
    LoopHealthPolicy,
    accuracy_regained,
    annotation_cost,
    audit_fall_warning,
    audit_verdict,
    correction_band_warning,
    correction_rates,
    cost_per_accuracy_point,
    cycle_table,
    has_numbers,
    loop_close_seconds,
    render_chart,
)
from hitl_pipeline.core.tiers import TIER_ADJUDICATION, TIER_EXPERT, TIER_GENERAL
from hitl_pipeline.core.types import LABEL_SOURCE, LABELLED_AT, PREDICTED_LABEL, TIER
from hitl_pipeline.defs.config import SettingsConfig, config_class
from hitl_pipeline.resources.dvc_store import DvcDatasetStore
from hitl_pipeline.resources.local_store import LocalStore
from hitl_pipeline.resources.mlflow_registry import (
    TAG_CHAMPION_SINCE,
    TAG_DATASET_VERSION,
    MlflowRegistryResource,
)
from hitl_pipeline.resources.production import ProductionSource

DRIFT_KEY = dg.AssetKey("drift_report")
CORRECTION_BAND_CHECK = "correction_rate_in_band"
AUDIT_FALL_CHECK = "audit_pass_rate_not_falling"

if TYPE_CHECKING:  # a type checker reads the fields through SettingsConfig
    LoopHealthConfig = SettingsConfig
else:
    LoopHealthConfig = config_class(
        LoopHealthPolicy,
        "LoopHealthConfig",
        extra={
            # prices of one answer per review tier (any currency), for the cost figures
            "price_per_label": (
                dict[str, float],
                Field(
                    default_factory=lambda: {
                        TIER_GENERAL: 0.10,
                        TIER_EXPERT: 1.00,
                        TIER_ADJUDICATION: 0.50,
                    }
                ),
            ),
            "default_price": (float, 0.10),
        },
        doc="Prices per review tier for the cost figures, and when loop health warns "
        "(generated from core.loop_health.LoopHealthPolicy, see its docs).",
    )


@dg.asset(
    group_name="s10_loop_health",
    deps=["human_labels", "champion_model"],
    kinds={"pandas", "matplotlib", "mlflow"},
    check_specs=[
        dg.AssetCheckSpec(
            CORRECTION_BAND_CHECK,
            asset="loop_metrics",
            description="The newest batch with enough labels corrects the model within the "
            "healthy band (below: reviewers' time spent where the model is right; above: "
            "the model is not competent enough to assist).",
        ),
        dg.AssetCheckSpec(
            AUDIT_FALL_CHECK,
            asset="loop_metrics",
            description="The newest audited batch's pass rate is not clearly below the "
            "earlier batches': the early warning before the audit_pass_rate_holds alarm.",
        ),
    ],
)
def loop_metrics(
    context: dg.AssetExecutionContext,
    config: LoopHealthConfig,
    local_store: LocalStore,
    registry: MlflowRegistryResource,
    dataset_store: DvcDatasetStore,
    production: ProductionSource,
) -> Iterator[dg.Output[pd.DataFrame] | dg.AssetCheckResult]:
    """Per-batch loop figures (the value and a table), their chart, and two warnings."""
    classes = production.schema().classes
    policy: LoopHealthPolicy = config.to_settings()
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
    band = (
        correction_rates(ledger, by=TIER, band=policy.band),
        correction_rates(ledger, by=PREDICTED_LABEL, band=policy.band),
    )
    chart: dict[str, Any] = {}
    if has_numbers(cycles):  # no empty chart before the first batch has figures
        png = render_chart(cycles, per_tier, title="hitl-pipeline loop health", band=policy.band)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        local_store.write_chart(kind="loop_health", name=stamp, png=png)
        kept = registry.log_report(
            kind="loop_health",
            name=stamp,
            files={"loop_health.png": png},
            dagster_run_id=context.run_id,
        )
        chart = {"chart": dg.MetadataValue.url(kept.url)} if kept.url else {}
        chart["chart_mlflow_run"] = kept.run_id
    yield dg.Output(
        cycles,
        metadata={
            "batches": len(cycles),
            "latest_batch": str(cycles["partition"].iloc[-1]) if len(cycles) else "",
            "per_batch": per_batch_table(cycles),
            **chart,
            "healthy_correction_band": "{:.0%}-{:.0%}".format(*policy.band),
            "correction_by_queue_and_class": dg.MetadataValue.md(
                _markdown(pd.concat(band)[["group", "annotations", "rate", "message"]])
            ),
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
            "annotators": dg.MetadataValue.md(_markdown(annotator_quality(votes, labels).round(3))),
        },
    )
    yield warning_result(CORRECTION_BAND_CHECK, correction_band_warning(cycles, policy))
    yield warning_result(AUDIT_FALL_CHECK, audit_fall_warning(cycles, policy))


PER_BATCH_COLUMNS: dict[str, str] = {
    "partition": "string",
    "annotations": "int",
    "labels": "int",
    "correction_rate": "float",
    "audited": "int",
    "audit_pass_rate": "float",
    "audit_low": "float",
    "audit_high": "float",
    "cost": "float",
}


def per_batch_table(cycles: pd.DataFrame) -> dg.TableMetadataValue:
    """The per-batch figures as a typed table (one row per partition, oldest first);
    a figure a batch does not have yet is left empty rather than shown as NaN."""
    records = []
    for row in cycles[list(PER_BATCH_COLUMNS)].itertuples(index=False):
        values: dict[str, Any] = {}
        for (name, kind), value in zip(PER_BATCH_COLUMNS.items(), row, strict=True):
            if value is None or (isinstance(value, float) and value != value):
                values[name] = None
            elif kind == "int":
                values[name] = int(value)
            elif kind == "float":
                values[name] = round(float(value), 4)
            else:
                values[name] = str(value)
        records.append(dg.TableRecord(values))
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, kind) for name, kind in PER_BATCH_COLUMNS.items()]
    )
    return dg.MetadataValue.table(records=records, schema=schema)


def warning_result(check_name: str, warning: BatchWarning) -> dg.AssetCheckResult:
    """A loop-health check result: severity WARN, with the batch it judged."""
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=not warning.warn,
        severity=dg.AssetCheckSeverity.WARN,
        description=warning.message,
        metadata={
            "batch": warning.partition or "",
            "value": _num(warning.value),
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
    # every frame the version learnt from or was judged on: training, the rows the
    # training variant was chosen on (refitted in), the gate's human rows, edge cases
    for name in (TRAINING, SELECTION, HUMAN_HOLDOUT, EDGE_CASES):
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
