"""Inference: score the batch with the MLflow ``champion``."""

import dagster as dg
import pandas as pd

from hitl_pipeline.core.inference import score_batch
from hitl_pipeline.core.types import CONFIDENCE
from hitl_pipeline.defs.partitions import BATCH_PARTITIONS
from hitl_pipeline.resources.mlflow_registry import MlflowRegistryResource
from hitl_pipeline.resources.production import ProductionSource


@dg.asset(partitions_def=BATCH_PARTITIONS, group_name="s02_inference", kinds={"mlflow"})
def predictions(
    production_batch: pd.DataFrame,
    registry: MlflowRegistryResource,
    production: ProductionSource,
) -> dg.Output[pd.DataFrame]:
    """Class probabilities, confidence, margin and entropy per row, with the model version."""
    champion = registry.champion()
    if champion is None:
        raise dg.Failure(
            "no champion model yet: materialize the retrain job once to train the first "
            "model from the seed data (`hitl-pipeline demo` does this for the demo)"
        )
    model = registry.load_model(ref=champion)
    scores = score_batch(
        model, production_batch, production.schema(), model_version=champion.version
    )
    return dg.Output(
        scores,
        metadata={
            "rows": len(scores),
            "model_version": champion.version,
            "mean_confidence": float(scores[CONFIDENCE].mean()) if len(scores) else 0.0,
            "predicted_classes": dg.MetadataValue.json(
                scores["predicted_label"].value_counts().to_dict()
            ),
        },
    )
