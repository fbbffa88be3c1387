"""Labeling: push the items to review into Label Studio with the model's pre-annotation."""

import dagster as dg
import pandas as pd

from hitl_pipeline.core.types import (
    CONFIDENCE,
    ITEM_ID,
    MODEL_VERSION,
    PREDICTED_LABEL,
    PRIORITY,
    REASONS,
    ROUTE,
    ROUTE_REVIEW,
    TIER,
    LabelingTask,
    PushResult,
)
from hitl_pipeline.defs.partitions import BATCH_PARTITIONS
from hitl_pipeline.resources.label_studio import LabelStudioResource
from hitl_pipeline.resources.production import ProductionSource


def tasks_from_queue(
    queue: pd.DataFrame, features: list[str], partition: str
) -> list[LabelingTask]:
    """The review rows of a routed batch as Label Studio tasks, highest priority first."""
    review = queue[queue[ROUTE] == ROUTE_REVIEW].sort_values(PRIORITY, ascending=False)
    return [
        LabelingTask(
            item_id=str(row[ITEM_ID]),
            features={name: _plain(row[name]) for name in features},
            predicted_label=str(row[PREDICTED_LABEL]),
            score=float(row[CONFIDENCE]),
            model_version=str(row[MODEL_VERSION]),
            reasons=tuple(str(row[REASONS]).split(";")),
            tier=str(row[TIER]),
            partition=partition,
            priority=float(row[PRIORITY]),
        )
        for _, row in review.iterrows()
    ]


def _plain(value: object) -> object:
    """JSON-friendly scalar (numpy types do not serialise)."""
    return value.item() if hasattr(value, "item") else value


@dg.asset(partitions_def=BATCH_PARTITIONS, group_name="s05_labeling", kinds={"labelstudio"})
def labeling_tasks(
    context: dg.AssetExecutionContext,
    review_queue: pd.DataFrame,
    label_studio: LabelStudioResource,
    production: ProductionSource,
) -> dg.Output[PushResult]:
    """Tasks in Label Studio; re-runs push only what is missing, never duplicates."""
    schema = production.schema()
    tasks = tasks_from_queue(review_queue, schema.feature_names, context.partition_key)
    result = label_studio.push_tasks(classes=schema.classes, tasks=tasks)
    return dg.Output(
        result,
        metadata={
            "tasks_routed": len(tasks),
            "tasks_created": result.created,
            "tasks_already_present": result.already_present,
            "project": dg.MetadataValue.url(
                f"{label_studio.url.rstrip('/')}/projects/{result.project_id}/data"
            ),
        },
    )
