"""Inference: score the batch with the MLflow ``champion``.

Besides the champion's probabilities, two figures that routing escalates on are computed
here, where the models are at hand: ``disagreement`` between the champion and the
previous champion (a committee of two that costs no training), and ``ood_score``, how
isolated each row is from the champion's training data (``core.ood``).
"""

import functools
from typing import Any

import dagster as dg

from hitl_pipeline.core.chunks import ParquetBatch, batch_chunks
from hitl_pipeline.core.loop import escalation_scores
from hitl_pipeline.core.ood import fit_ood_detector
from hitl_pipeline.core.streaming import score_to_file
from hitl_pipeline.defs.partitions import BATCH_PARTITIONS
from hitl_pipeline.defs.preflight import require_stores
from hitl_pipeline.defs.s03_monitoring import DATASET_VERSION_TAG
from hitl_pipeline.resources.dvc_store import DvcDatasetStore
from hitl_pipeline.resources.mlflow_registry import MlflowRegistryResource
from hitl_pipeline.resources.production import ProductionSource


class InferenceConfig(dg.Config):
    # champion vs previous champion disagreement (needs a previous champion)
    committee: bool = True
    # isolation of each row from the champion's training data
    out_of_distribution: bool = True


@dg.asset(partitions_def=BATCH_PARTITIONS, group_name="s02_inference", kinds={"mlflow"})
def predictions(
    config: InferenceConfig,
    production_batch: Any,
    registry: MlflowRegistryResource,
    production: ProductionSource,
    dataset_store: DvcDatasetStore,
) -> dg.Output[Any]:
    """Class probabilities, confidence, margin and entropy per row, with the model version;
    committee disagreement and out-of-distribution score when available.

    The batch (a ``ParquetBatch``, or a frame) is scored ``chunk_rows`` rows at a time
    into a Parquet file, passed on as a ``ParquetBatch``.
    """
    require_stores(registry.check)  # a dead store fails here, named, not deep in a load
    champion = registry.champion()
    if champion is None:
        raise dg.Failure(
            "no champion model yet: materialize the retrain job once to train the first "
            "model from the seed data (`hitl-pipeline demo` does this for the demo)"
        )
    schema = production.schema()
    model = registry.load_model(ref=champion)

    previous = registry.previous_champion() if config.committee else None
    if previous is not None and previous.version == champion.version:
        previous = None
    dataset_version = champion.tags.get(DATASET_VERSION_TAG)
    detector = None
    if config.out_of_distribution and dataset_version and len(production_batch):
        detector = fit_ood_detector(dataset_store.load(version_id=dataset_version), schema)
    extra = functools.partial(
        escalation_scores,
        schema=schema,
        champion=model,
        previous=registry.load_model(ref=previous) if previous is not None else None,
        ood=detector,
    )
    staged = production.staging_file(name=f"predictions-{champion.version}")
    summary = score_to_file(
        model,
        batch_chunks(production_batch, production.chunk_rows),
        staged,
        schema,
        model_version=champion.version,
        extra=extra,
    )

    metadata: dict[str, Any] = {
        "rows": summary.rows,
        "model_version": champion.version,
        "mean_confidence": summary.mean_confidence,
        "predicted_classes": dg.MetadataValue.json(dict(summary.predicted.most_common())),
        "committee": f"v{champion.version} vs v{previous.version}"
        if summary.mean_disagreement is not None and previous is not None
        else "none (no previous champion)",
    }
    if summary.mean_disagreement is not None:
        metadata["mean_disagreement"] = summary.mean_disagreement
    if summary.share_ood_99 is not None:
        metadata["share_ood_99"] = summary.share_ood_99
    return dg.Output(ParquetBatch.of(staged), metadata=metadata)
