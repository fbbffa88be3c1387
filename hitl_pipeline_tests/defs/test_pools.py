"""Steps that write shared state sit in a concurrency pool; scoring steps in none."""

import dagster as dg
import pytest

from hitl_pipeline.defs.pools import (
    CHAMPION_ALIAS_POOL,
    DATASET_REPO_POOL,
    LABEL_LEDGER_POOL,
    LABEL_STUDIO_POOL,
)
from hitl_pipeline.defs.s01_ingest import production_batch
from hitl_pipeline.defs.s02_inference import predictions
from hitl_pipeline.defs.s04_selection import review_queue, routing_threshold
from hitl_pipeline.defs.s05_labeling import labeling_tasks
from hitl_pipeline.defs.s06_feedback import adjudication_tasks, human_labels
from hitl_pipeline.defs.s07_dataset import training_dataset
from hitl_pipeline.defs.s09_deployment import champion_model


@pytest.mark.parametrize(
    ("asset", "pool"),
    [
        (labeling_tasks, LABEL_STUDIO_POOL),  # creates tasks in Label Studio
        (adjudication_tasks, LABEL_STUDIO_POOL),
        (human_labels, LABEL_LEDGER_POOL),  # rewrites the annotation ledger
        (training_dataset, DATASET_REPO_POOL),  # git + DVC commit
        (champion_model, CHAMPION_ALIAS_POOL),  # moves the registry aliases
        (routing_threshold, CHAMPION_ALIAS_POOL),  # the threshold of the new champion
        (production_batch, None),  # per partition: runs in parallel
        (predictions, None),
        (review_queue, None),
    ],
)
def test_shared_state_writers_are_pooled(asset: dg.AssetsDefinition, pool: str | None) -> None:
    assert asset.op.pool == pool
