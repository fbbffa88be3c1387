"""Inference: score the batch with the MLflow ``champion``.

Besides the champion's probabilities, two figures that routing escalates on are computed
here, where the models are at hand: ``disagreement`` between the champion and the
previous champion (a committee of two that costs no training), and ``ood_score``, how
isolated each row is from the champion's training data (``core.ood``).
"""

import dagster as dg
import pandas as pd

from hitl_pipeline.core.inference import score_batch
from hitl_pipeline.core.loop import escalation_scores
from hitl_pipeline.core.ood import fit_ood_detector
from hitl_pipeline.core.types import CONFIDENCE, DISAGREEMENT, OOD_SCORE
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
    production_batch: pd.DataFrame,
    registry: MlflowRegistryResource,
    production: ProductionSource,
    dataset_store: DvcDatasetStore,
) -> dg.Output[pd.DataFrame]:
    """Class probabilities, confidence, margin and entropy per row, with the model version;
    committee disagreement and out-of-distribution score when available."""
    require_stores(registry.check)  # a dead store fails here, named, not deep in a load
    champion = registry.champion()
    if champion is None:
        raise dg.Failure(
            "no champion model yet: materialize the retrain job once to train the first "
            "model from the seed data (`hitl-pipeline demo` does this for the demo)"
        )
    schema = production.schema()
    model = registry.load_model(ref=champion)
    scores = score_batch(model, production_batch, schema, model_version=champion.version)

    previous = registry.previous_champion() if config.committee else None
    if previous is not None and previous.version == champion.version:
        previous = None
    dataset_version = champion.tags.get(DATASET_VERSION_TAG)
    detector = None
    if config.out_of_distribution and dataset_version and len(scores):
        detector = fit_ood_detector(dataset_store.load(version_id=dataset_version), schema)
    scores = escalation_scores(
        scores,
        production_batch,
        schema,
        champion=model,
        previous=registry.load_model(ref=previous) if previous is not None else None,
        ood=detector,
    )

    metadata = {
        "rows": len(scores),
        "model_version": champion.version,
        "mean_confidence": float(scores[CONFIDENCE].mean()) if len(scores) else 0.0,
        "predicted_classes": dg.MetadataValue.json(
            scores["predicted_label"].value_counts().to_dict()
        ),
        "committee": f"v{champion.version} vs v{previous.version}"
        if DISAGREEMENT in scores and previous is not None
        else "none (no previous champion)",
    }
    if DISAGREEMENT in scores and len(scores):
        metadata["mean_disagreement"] = float(scores[DISAGREEMENT].mean())
    if OOD_SCORE in scores and len(scores):
        metadata["share_ood_99"] = float((scores[OOD_SCORE] >= 0.99).mean())
    return dg.Output(scores, metadata=metadata)
