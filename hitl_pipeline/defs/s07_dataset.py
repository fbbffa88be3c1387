"""Dataset: seed data plus human-verified labels, versioned with DVC."""

import dagster as dg
import pandas as pd

from hitl_pipeline.core.datasets import (
    canonical_dataset,
    edge_case_items,
    merge_labelled,
    split_holdout,
)
from hitl_pipeline.core.types import ITEM_ID, DatasetVersion
from hitl_pipeline.resources.dvc_store import DvcDatasetStore
from hitl_pipeline.resources.local_store import LocalStore
from hitl_pipeline.resources.production import ProductionSource


class DatasetConfig(dg.Config):
    # Share of human labels kept out of training so the gate sees recent, unseen data.
    human_holdout_fraction: float = 0.25
    holdout_salt: str = "hitl-holdout-v1"


@dg.asset(group_name="s07_dataset", kinds={"dvc"})
def training_dataset(
    config: DatasetConfig,
    human_labels: pd.DataFrame,
    local_store: LocalStore,
    dataset_store: DvcDatasetStore,
    production: ProductionSource,
) -> dg.Output[DatasetVersion]:
    """A DVC version holding the training rows, the fixed holdout, the human holdout and
    the edge cases (items a reviewer flagged, with their resolved label)."""
    schema = production.schema()
    seed_train, seed_holdout = local_store.read_seed()
    if human_labels.empty:  # before the first annotation the frame has no feature columns
        human_labels = seed_train.iloc[0:0]
    human_holdout, human_train = split_holdout(
        human_labels, fraction=config.human_holdout_fraction, salt=config.holdout_salt
    )
    training = merge_labelled(seed_train, human_train, schema)
    flagged = edge_case_items(local_store.read_ledger())
    edge_cases = canonical_dataset(human_labels[human_labels[ITEM_ID].isin(flagged)], schema)
    version = dataset_store.commit(
        frames={
            "training": training,
            "holdout": canonical_dataset(seed_holdout, schema),
            "human_holdout": canonical_dataset(human_holdout, schema),
            "edge_cases": edge_cases,
        },
        message=f"training data: {len(seed_train)} seed + {len(human_train)} human rows",
    )
    return dg.Output(
        version,
        metadata={
            "dataset_version": version.version_id,
            "git_rev": version.git_rev,
            "md5": version.md5,
            "training_rows": len(training),
            "human_training_rows": len(human_train),
            "human_holdout_rows": len(human_holdout),
            "edge_case_rows": len(edge_cases),
        },
    )
