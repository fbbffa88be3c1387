"""Monitoring: Evidently drift of the batch against the champion's training data.

The ``no_dataset_drift`` check failing is the drift alert that the drift sensor reacts to.
"""

import dataclasses
import warnings
from typing import TYPE_CHECKING, Any

import dagster as dg

from hitl_pipeline.core.chunks import ParquetBatch, batch_chunks
from hitl_pipeline.core.drift import DriftPolicy, compute_drift, drift_columns, drift_sample
from hitl_pipeline.core.inference import score_batch
from hitl_pipeline.core.loop import drift_reference
from hitl_pipeline.core.types import MODEL_VERSION, DriftSummary
from hitl_pipeline.defs.config import SettingsConfig, config_class
from hitl_pipeline.defs.partitions import BATCH_PARTITIONS
from hitl_pipeline.resources.dvc_store import DvcDatasetStore
from hitl_pipeline.resources.local_store import LocalStore
from hitl_pipeline.resources.mlflow_registry import MlflowRegistryResource
from hitl_pipeline.resources.production import ProductionSource

DATASET_VERSION_TAG = "hitl.dataset_version"
NO_DRIFT_CHECK = "no_dataset_drift"

if TYPE_CHECKING:  # a type checker reads the fields through SettingsConfig
    DriftConfig = SettingsConfig
else:
    DriftConfig = config_class(
        DriftPolicy,
        "DriftConfig",
        doc="The drift alert's policy, generated from core.drift.DriftPolicy (see its docs): "
        "Evidently stattest names (empty: Evidently's size-dependent choice) and thresholds.",
    )


with warnings.catch_warnings():
    # A check spec's partitions_def is a preview API in Dagster 1.13, and the only way to
    # give a partitioned asset's check a per-partition verdict: without it the result is
    # stored without a partition while the planned evaluation carries one, so the batch's
    # check stayed "planned" (shown as running) in the partition view forever.
    warnings.simplefilter("ignore", dg.PreviewWarning)
    DRIFT_CHECK_SPEC = dg.AssetCheckSpec(
        NO_DRIFT_CHECK, asset="drift_report", partitions_def=BATCH_PARTITIONS
    )


@dg.asset(
    partitions_def=BATCH_PARTITIONS,
    group_name="s03_monitoring",
    kinds={"evidently"},
    check_specs=[DRIFT_CHECK_SPEC],
)
def drift_report(
    context: dg.AssetExecutionContext,
    config: DriftConfig,
    predictions: Any,
    registry: MlflowRegistryResource,
    dataset_store: DvcDatasetStore,
    production: ProductionSource,
    local_store: LocalStore,
):
    """Per-column, prediction and confidence drift; the HTML report is kept on disk.

    The batch is compared through a seeded sample of ``sample_rows`` rows, drawn while
    its predictions are read in chunks (``drift_sample``).
    """
    schema = production.schema()
    policy = config.to_settings()
    sample, batch_rows = drift_sample(
        batch_chunks(predictions, production.chunk_rows, columns=drift_columns(schema)),
        policy.sample_rows,
        id_column=schema.id_column,
    )
    version = predictions.first(MODEL_VERSION) if isinstance(predictions, ParquetBatch) else None
    if version is None:
        version = predictions[MODEL_VERSION].iloc[0]
    champion = registry.get_version(version=str(version))
    dataset_version = champion.tags[DATASET_VERSION_TAG]
    # the seed rows of the champion's dataset: a representative sample of the data the
    # model was built for (the human rows were picked for being hard, see drift_reference)
    reference = drift_reference(dataset_store.load(version_id=dataset_version))
    # Confidence is compared with the champion on rows it never saw: on its own training
    # rows it is overconfident, which would raise a confidence-drift alarm on every batch.
    reference_scores = score_batch(
        registry.load_model(ref=champion),
        dataset_store.load(version_id=dataset_version, name="holdout"),
        schema,
        model_version=champion.version,
    )
    summary, html = compute_drift(
        reference,
        sample,
        schema,
        reference_scores=reference_scores,
        current_scores=sample,
        policy=policy,
    )
    local_store.write_report(kind="drift", name=context.partition_key, html=html)
    figures = {
        "partition": context.partition_key,
        "drift_share": summary.drift_share,
        "drifted_columns": dg.MetadataValue.json(list(summary.drifted_columns)),
        "prediction_drift": summary.prediction_drift,
        "confidence_drift": summary.confidence_drift,
        "batch_rows": batch_rows,
        # the rows compared on each side (DriftPolicy.sample_rows caps them)
        "drift_sample_rows": summary.current_rows,
        "reference_rows": summary.reference_rows,
    }
    # kept in MLflow too, so that the report opens from the UI wherever the loop runs
    report = registry.log_report(
        kind="drift",
        name=context.partition_key,
        files={f"{context.partition_key}.html": html},
        dagster_run_id=context.run_id,
        metrics={
            "drift_share": summary.drift_share,
            "prediction_drift": float(summary.prediction_drift),
            "confidence_drift": float(summary.confidence_drift),
        },
        tags={"hitl.partition": context.partition_key, DATASET_VERSION_TAG: dataset_version},
    )
    links = {"report": dg.MetadataValue.url(report.url)} if report.url else {}
    yield dg.Output(
        summary,
        metadata={
            **figures,
            **links,
            "report_mlflow_run": report.run_id,
            "reference_dataset": champion.tags[DATASET_VERSION_TAG],
        },
    )
    yield dg.AssetCheckResult(
        check_name=NO_DRIFT_CHECK,
        passed=not summary.dataset_drift,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            **figures,
            "threshold": summary.drift_share_threshold,
            # text columns whose drift raises the alarm by itself (DriftPolicy.text_alarms)
            "text_drifted": dg.MetadataValue.json(
                [c for c in summary.drifted_columns if c in schema.text_features]
            ),
            "policy": dg.MetadataValue.json(dataclasses.asdict(config.to_settings())),
            **links,
        },
        description=_describe(summary),
    )


def _describe(summary: DriftSummary) -> str:
    if not summary.dataset_drift:
        return f"{summary.drift_share:.0%} of columns drifted, below the alert threshold"
    columns = ", ".join(summary.drifted_columns) or "none"
    return f"dataset drift: {summary.drift_share:.0%} of columns drifted ({columns})"
